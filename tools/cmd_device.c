/* shahidi device enroll | list | revoke */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "auth.h"
#include "cli.h"
#include "common.h"
#include "office_api.h"
#include "qr.h"
#include "render.h"

/* Enrolments and revocations are the office's actions (office_api.h),
 * audited as the CLI's user, as over HTTP as the admin's device. */
struct enrol_ctx {
	struct auth_enrol e;
	uint64_t id;
	char token[AUTH_TOKEN_LEN + 1];
	struct office_verdict v;
};

static int enrol_fn(struct store_txn *t, void *ud)
{
	struct enrol_ctx *c = ud;
	struct office_actor actor;
	office_api_actor_cli(&actor);
	return office_api_enrol(t, &actor, &c->e, sh_now_ms(), &c->id, c->token, &c->v);
}

/* The QR code's files: opened (made 0600) before the enrolment, so that
 * a path that cannot be written enrols nothing; removed when anything
 * after fails. */
struct qr_file {
	const char *path;  /* argv's */
	int fd;            /* -1: not asked for, or closed */
	bool png;
	bool made;         /* opened by us: removed if anything fails */
};

static void qr_files_drop(struct qr_file *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (f[i].fd >= 0)
			close(f[i].fd);
		f[i].fd = -1;
		if (f[i].made)
			unlink(f[i].path);
		f[i].made = false;
	}
}

static int qr_files_open(struct qr_file *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!f[i].path)
			continue;
		/* O_NOFOLLOW: a link planted there does not get the token */
		f[i].fd = open(f[i].path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
		f[i].made = f[i].fd >= 0;
		if (f[i].fd < 0 || fchmod(f[i].fd, 0600) < 0) {
			cli_err("cannot write %s: %s", f[i].path, strerror(errno));
			qr_files_drop(f, n);
			return -1;
		}
	}
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Draws and writes the code of the enrolment just made. 0, or -1 said. */
static int qr_emit(const char *url, uint64_t id, const char *token, bool term,
		   struct qr_file *f, size_t n)
{
	struct buf payload = {0}, out = {0};
	struct qr *q = NULL;
	int r = qr_enrolment(url, id, token, &payload, &q);
	if (r == 0 && term && (r = qr_text(q, isatty(STDOUT_FILENO), &out)) == 0) {
		printf("\n%.*s\nScan it with the Shahidi app. It holds the token: show it to\n"
		       "the phone only, once.\n", (int)out.len, (const char *)out.data);
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (f[i].fd < 0)
			continue;
		buf_reset(&out);
		if ((r = f[i].png ? qr_png(q, 8, &out) : qr_svg(q, 8, &out)) == 0 &&
		    (r = write_all(f[i].fd, out.data, out.len)) == 0 && fsync(f[i].fd) < 0)
			r = -errno;
		if (r == 0) {
			int fd = f[i].fd;
			f[i].fd = -1; /* closed, whatever close() says */
			if (close(fd) < 0)
				r = -errno;
		}
		if (r < 0) {
			cli_err("cannot write %s: %s", f[i].path, sh_strerror(r));
			break;
		}
		fprintf(stderr, "shahidi: wrote %s (0600: it holds the token; delete it once the phone "
				"has scanned it)\n", f[i].path);
	}
	if (r < 0) {
		char hex[17];
		sh_device_fmt(id, hex);
		cli_err("the device is enrolled but its code was not made: revoke it "
			"(shahidi device revoke %s) and enrol again", hex);
		qr_files_drop(f, n);
	}
	if (payload.data) /* it holds the token */
		sodium_memzero(payload.data, payload.len);
	if (out.data)
		sodium_memzero(out.data, out.len);
	buf_free(&payload);
	buf_free(&out);
	qr_free(q);
	return r < 0 ? -1 : 0;
}

static int enroll(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},   {"name", required_argument, 0, 'n'},
		{"county", required_argument, 0, 'c'}, {"role", required_argument, 0, 'r'},
		{"qr", no_argument, 0, 'q'},	       {"qr-png", required_argument, 0, 'P'},
		{"qr-svg", required_argument, 0, 'S'}, {"url", required_argument, 0, 'u'},
		{"help", no_argument, 0, 'h'},	       {0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *url = NULL;
	bool qr_term = false;
	struct qr_file files[2] = {{NULL, -1, true, false}, {NULL, -1, false, false}};
	struct enrol_ctx ctx = {.e = {.role = ROLE_DEVICE}};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			data = optarg;
			break;
		case 'n':
			ctx.e.name = optarg;
			break;
		case 'c':
			ctx.e.county = optarg;
			break;
		case 'q':
			qr_term = true;
			break;
		case 'P':
			files[0].path = optarg;
			break;
		case 'S':
			files[1].path = optarg;
			break;
		case 'u':
			url = optarg;
			break;
		case 'r':
			if (store_role_parse(optarg, &ctx.e.role) < 0) {
				cli_err("--role takes device, coordinator, admin or metrics");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			printf("Usage: shahidi device enroll [--data DIR] --name NAME --county CODE\n"
			       "                             [--role device|coordinator|admin|metrics]\n"
			       "                             [--qr] [--qr-png FILE] [--qr-svg FILE] --url URL\n\n"
			       "Creates a device (a phone, or a coordinator's or admin's access, or a\n"
			       "Prometheus server's: metrics reads /metrics only, has no county) and\n"
			       "prints its id and its token. The token is shown this once: only a\n"
			       "hash of it is stored. Give it to the device over a safe channel.\n"
			       "A device needs its county (001-047); a coordinator with a county sees\n"
			       "only that county.\n\n"
			       "  --qr            also draw a QR code in the terminal for the app to scan:\n"
			       "                  shahidi://enroll?v=1&url=URL&device=ID&token=TOKEN\n"
			       "  --qr-png FILE   write the code as a PNG image (made 0600)\n"
			       "  --qr-svg FILE   write the code as an SVG image (made 0600)\n"
			       "  --url URL       the server's address as the phone reaches it, e.g.\n"
			       "                  https://shahidi.example.org (needed by the three above)\n"
			       "A file that cannot be written enrols nothing.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	bool want_qr = qr_term || files[0].path || files[1].path;
	char err[160];
	if (want_qr && !url) {
		cli_err("--qr needs --url (so do --qr-png and --qr-svg): the server's address as "
			"the phone reaches it, e.g. https://shahidi.example.org");
		return EXIT_USAGE;
	}
	if (url && !want_qr) {
		cli_err("--url goes with --qr, --qr-png or --qr-svg");
		return EXIT_USAGE;
	}
	if (url && qr_url_check(url, err, sizeof(err)) < 0) {
		cli_err("--url: %s", err);
		return EXIT_USAGE;
	}
	if (!ctx.e.name) {
		cli_err("enroll needs --name (see --help)");
		return EXIT_USAGE;
	}
	if (qr_files_open(files, 2) < 0)
		return 1;
	ctx.e.qr = want_qr;
	struct store *s = cli_open_store(data, false);
	if (!s) {
		qr_files_drop(files, 2);
		return 1;
	}
	int r = store_write(s, enrol_fn, &ctx);
	store_close(s);
	if (r < 0) {
		qr_files_drop(files, 2);
		cli_err("cannot enrol: %s", r == -EINVAL ? ctx.v.msg : sh_strerror(r));
		return r == -EINVAL ? EXIT_USAGE : 1;
	}
	printf("device %016" PRIx64 "\ntoken  %s\n", ctx.id, ctx.token);
	r = want_qr ? qr_emit(url, ctx.id, ctx.token, qr_term, files, 2) : 0;
	sodium_memzero(ctx.token, sizeof(ctx.token));
	return r < 0 ? 1 : 0;
}

static int list(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"json", no_argument, 0, 'j'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA;
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			data = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			printf("Usage: shahidi device list [--data DIR] [--json]\n\n"
			       "Lists every device with its role, county and state. Tokens are never\n"
			       "shown: they are not stored.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	struct store *s = cli_open_store(data, true);
	struct arena *a = arena_new();
	struct store_txn *t = NULL;
	int rc = 1, r;
	if (!s || !a || store_begin(s, false, &t) < 0)
		goto out;
	uint64_t id = 0;
	store_device_t *d;
	json_t *arr = json ? json_array() : NULL;
	if (!json)
		printf("%-16s  %-11s  %-6s  %-8s  %s\n", "ID", "ROLE", "COUNTY", "STATE", "NAME");
	while ((r = store_device_next(t, a, &id, &d)) == 1) {
		char hex[17], when[32];
		sh_device_fmt(d->id, hex);
		render_time_ms(d->enrolled_ms, when);
		if (json)
			json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:b,s:s}", "id", hex,
							     "name", d->name, "role",
							     store_role_name(d->role), "county",
							     d->county, "revoked", d->revoked,
							     "enrolled", when));
		else
			printf("%-16s  %-11s  %-6s  %-8s  %s\n", hex, store_role_name(d->role),
			       d->county[0] ? d->county : "-", d->revoked ? "revoked" : "active",
			       d->name);
		arena_reset(a);
	}
	if (json) {
		json_dumpf(arr, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(arr);
	}
	rc = r < 0 ? 1 : 0;
out:
	store_abort(t);
	store_close(s);
	arena_free(a);
	return rc;
}

struct revoke_ctx {
	uint64_t id;
	struct office_verdict v;
};

static int revoke_fn(struct store_txn *t, void *ud)
{
	struct revoke_ctx *c = ud;
	struct office_actor actor;
	office_api_actor_cli(&actor);
	return office_api_revoke(t, &actor, c->id, sh_now_ms(), &c->v);
}

static int revoke_cmd(int argc, char **argv)
{
	const char *data;
	int rc;
	if (!cli_data_only(argc, argv,
			   "Usage: shahidi device revoke [--data DIR] ID\n\n"
			   "Revokes a device's token: the server refuses it from the next request\n"
			   "on, without a restart. The device's data stays. Use it at once when a\n"
			   "phone is lost or seized.\n",
			   &data, &rc))
		return rc;
	struct revoke_ctx ctx = {0};
	if (optind != argc - 1 || sh_device_parse(argv[optind], &ctx.id) < 0) {
		cli_err("revoke needs one device id (16 hex digits; see 'shahidi device list')");
		return EXIT_USAGE;
	}
	struct store *s = cli_open_store(data, false);
	if (!s)
		return 1;
	int r = store_write(s, revoke_fn, &ctx);
	store_close(s);
	if (r == -ENOENT) {
		cli_err("no device %s", argv[optind]);
		return 1;
	}
	if (r < 0) {
		cli_err("cannot revoke: %s", sh_strerror(r));
		return 1;
	}
	printf("device %s revoked\n", argv[optind]);
	return 0;
}

int cmd_device(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "enroll"))
		return enroll(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "list"))
		return list(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "revoke"))
		return revoke_cmd(argc - 1, argv + 1);
	FILE *out = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout
											 : stderr;
	fprintf(out, "Usage: shahidi device enroll|list|revoke [OPTIONS]\n\n"
		     "  enroll   create a device and print its token (once; --qr: as a QR code)\n"
		     "  list     list devices\n"
		     "  revoke   revoke a device's token\n");
	return out == stdout ? 0 : EXIT_USAGE;
}
