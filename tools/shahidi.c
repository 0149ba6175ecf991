/* shahidi: the command-line tool over the core library. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "common.h"
#include "rebuild.h"

static const struct cli_cmd commands[] = {
	{"demo", "make a store, ingest a sample batch, print the merged record", cmd_demo},
	{"sample", "write a sample push batch of synthetic reports to a file", cmd_sample},
	{"ingest", "apply a push batch file to a store, as the server does", cmd_ingest},
	{"show", "print a merged record with its field stamps", cmd_show},
	{"conflicts", "list open conflicts; 'conflicts resolve' resolves one", cmd_conflicts},
	{"verify", "check the change log's hash chain", cmd_verify},
	{"rebuild", "merge every record again from the change log", cmd_rebuild},
	{"checkpoint", "sign the hash chain's head with a key kept outside the store", cmd_checkpoint},
	{"erase", "erase a record's content on request, keeping the custody trail", cmd_erase},
	{"status", "sync status per device, county and store", cmd_status},
	{"export", "export merged records as CSV or NDJSON", cmd_export},
	{"history", "a record's custody trail from the change log", cmd_history},
	{"assign", "assign a record to a device (it will pull it)", cmd_assign},
	{"backup", "a consistent copy of the store, while the server runs", cmd_backup},
	{"restore", "put a verified backup in place as the store", cmd_restore},
	{"audit", "the audit log of exports and office actions", cmd_audit},
	{"device", "enrol, list and revoke devices and their tokens", cmd_device},
	{"push", "send push batch files to a server (the reference client)", cmd_push},
	{"pull", "fetch a device's changes from a server", cmd_pull},
};

void cli_err(const char *fmt, ...)
{
	va_list ap;
	fputs("shahidi: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

struct store *cli_open_store(const char *dir, bool read_only)
{
	struct store *s;
	char err[512];
	struct store_opts o = {.read_only = read_only};
	if (store_open(dir, &o, &s, err, sizeof(err)) < 0) {
		cli_err("%s", err);
		return NULL;
	}
	/* A store of an older format is merged again under today's rule the
	 * first time anything writes to it. */
	int r = read_only ? 0 : rebuild_if_old(s, stderr);
	if (r < 0) {
		cli_err("%s: rebuilding the records of an older store format: %s", dir, sh_strerror(r));
		store_close(s);
		return NULL;
	}
	return s;
}

struct store *cli_open_existing_store(const char *dir)
{
	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && stat(path, &st) < 0 && errno == ENOENT) {
		cli_err("%s holds no Shahidi store (no data.mdb); nothing was written", dir);
		return NULL;
	}
	/* Opening for reading first refuses an LMDB file that is not a store
	 * (no format version) before anything is written to it. */
	struct store *s = cli_open_store(dir, true);
	if (!s)
		return NULL;
	store_close(s);
	return cli_open_store(dir, false);
}

struct form_registry *cli_load_forms(const char *extra)
{
	struct form_registry *reg;
	char err[512];
	if (form_registry_new(&reg) < 0) {
		cli_err("out of memory");
		return NULL;
	}
	if (form_registry_add_builtin(reg, err, sizeof(err)) < 0 ||
	    (extra && form_registry_add_path(reg, extra, err, sizeof(err)) < 0)) {
		cli_err("forms: %s", err);
		form_registry_free(reg);
		return NULL;
	}
	return reg;
}

bool cli_data_only(int argc, char **argv, const char *help, const char **data, int *ret)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	*data = CLI_DEFAULT_DATA;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': *data = optarg; break;
		case 'h':
			fputs(help, stdout);
			*ret = 0;
			return false;
		default:
			*ret = EXIT_USAGE;
			return false;
		}
	}
	return true;
}

int cli_read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f)
		return -errno;
	uint8_t *data = NULL;
	size_t len = 0, cap = 0;
	int r = 0;
	for (;;) {
		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 65536;
			uint8_t *p = realloc(data, cap);
			if (!p) {
				r = -ENOMEM;
				break;
			}
			data = p;
		}
		size_t n = fread(data + len, 1, cap - len, f);
		len += n;
		if (n == 0) {
			if (ferror(f))
				r = -EIO;
			break;
		}
	}
	if (f != stdin)
		fclose(f);
	if (r < 0) {
		free(data);
		return r;
	}
	*ret = data;
	*ret_len = len;
	return 0;
}

int cli_write_file(const char *path, const uint8_t *p, size_t n)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "wb") : stdout;
	if (!f)
		return -errno;
	int r = fwrite(p, 1, n, f) == n ? 0 : -EIO;
	if (f != stdout) {
		if (fclose(f) != 0 && r == 0)
			r = -EIO;
	} else if (fflush(f) != 0) {
		r = -EIO;
	}
	return r;
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: shahidi COMMAND [OPTIONS]\n\n"
		     "Shahidi: offline-first sync for human-rights field documentation.\n\n"
		     "Commands:\n");
	for (size_t i = 0; i < SH_ARRAY_SIZE(commands); i++)
		fprintf(out, "  %-10s  %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nRun 'shahidi COMMAND --help' for a command's options;\n"
		     "'shahidi --version' prints the version.\n"
		     "The data directory defaults to ./%s (--data DIR).\n",
		CLI_DEFAULT_DATA);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("shahidi %s\n", SHAHIDI_VERSION);
		return 0;
	}
	for (size_t i = 0; i < SH_ARRAY_SIZE(commands); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	cli_err("unknown command '%s'", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
