/* shahidi status | export | history | assign | backup | audit, and
 * `conflicts resolve`: what coordinators and admins do at the office. They
 * read and write the data directory directly, whether or not the server
 * runs, and record what they did in the audit log. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <wchar.h>
#include <sys/stat.h>

#include "arena.h"
#include "audit.h"
#include "cli.h"
#include "common.h"
#include "export.h"
#include "export_long.h"
#include "export_stat.h"
#include "export_xlsx.h"
#include "render.h"
#include "resolve.h"
#include "scope.h"
#include "office_api.h"
#include "status.h"
#include "store.h"
#include "upload.h"
#include "uuid.h"

/* "042,047" -> a NULL-terminated array in a static buffer. */
static size_t parse_counties(const char *arg, const char **out, size_t max)
{
	static char buf[512];
	size_t n = 0;
	snprintf(buf, sizeof(buf), "%s", arg);
	for (char *tok = strtok(buf, ", "); tok && n < max; tok = strtok(NULL, ", "))
		out[n++] = tok;
	return n;
}

/* 0 when every code is in the county vocabulary of a loaded form (of
 * form_id when given); otherwise prints the codes that are and returns
 * EXIT_USAGE. An unknown code would silently select nothing. */
static int check_counties(const struct form_registry *reg, const char *form_id,
			  const char *const *codes, size_t n)
{
	const struct form_field *vocab = NULL;
	for (size_t k = 0; k < n; k++) {
		bool ok = false;
		for (size_t i = 0; i < form_registry_count(reg) && !ok; i++) {
			const struct form *f = form_registry_at(reg, i);
			if (!f->county_field || (form_id && strcmp(f->form_id, form_id)))
				continue;
			vocab = vocab ? vocab : f->county_field;
			ok = form_choice(f->county_field, codes[k], strlen(codes[k])) != NULL;
		}
		if (ok)
			continue;
		cli_err("unknown county '%s'; the county codes are:", codes[k]);
		for (size_t i = 0; vocab && i < vocab->n_choices; i++)
			fprintf(stderr, "  %s %s%s", vocab->choices[i].code, vocab->choices[i].label,
				i % 4 == 3 || i + 1 == vocab->n_choices ? "\n" : "");
		return EXIT_USAGE;
	}
	return 0;
}

/* ---- status ---- */

/* Prints s in exactly width terminal columns: cut on a character boundary
 * (with "…" when cut), padded by display width (wcwidth), so that names
 * with accents or wide characters keep the columns aligned. Bytes that are
 * not UTF-8, and control characters, print as '?'. NULL prints "-". */
static void put_cell(const char *s, int width)
{
	if (!s || !*s)
		s = "-";
	mbstate_t ms;
	int total = 0;
	memset(&ms, 0, sizeof(ms));
	for (const char *p = s; *p;) {
		wchar_t wc;
		size_t n = mbrtowc(&wc, p, strlen(p), &ms);
		int w = 1;
		if (n == (size_t)-1 || n == (size_t)-2) {
			memset(&ms, 0, sizeof(ms));
			n = 1;
		} else if ((w = wcwidth(wc)) < 0) {
			w = 1;
		}
		total += w;
		p += n;
	}
	int room = total > width ? width - 1 : width, used = 0;
	memset(&ms, 0, sizeof(ms));
	for (const char *p = s; *p;) {
		wchar_t wc;
		size_t n = mbrtowc(&wc, p, strlen(p), &ms);
		int w = 1;
		bool bad = n == (size_t)-1 || n == (size_t)-2;
		if (bad) {
			memset(&ms, 0, sizeof(ms));
			n = 1;
		} else if ((w = wcwidth(wc)) < 0) {
			w = 1;
			bad = true;
		}
		if (used + w > room)
			break;
		if (bad)
			putchar('?');
		else
			fwrite(p, 1, n, stdout);
		used += w;
		p += n;
	}
	if (total > width) {
		fputs("\xe2\x80\xa6", stdout); /* … */
		used++;
	}
	for (; used < width; used++)
		putchar(' ');
}

static void print_time(const json_t *iso)
{
	const char *s = json_string_value(iso);
	printf("%-20.19s", s ? s : "-");
}

static void print_status(json_t *st)
{
	json_t *srv = json_object_get(st, "server");
	printf("Shahidi status at %s (devices silent for more than %.0f days are listed)\n",
	       json_string_value(json_object_get(st, "generated")),
	       json_real_value(json_object_get(st, "silent_after_days")));
	printf("Records: %" JSON_INTEGER_FORMAT " (%" JSON_INTEGER_FORMAT " deleted), open conflicts: %" JSON_INTEGER_FORMAT,
	       json_integer_value(json_object_get(srv, "records")),
	       json_integer_value(json_object_get(srv, "deleted")),
	       json_integer_value(json_object_get(srv, "open_conflicts")));
	if (json_object_get(srv, "store_bytes"))
		printf(", log entries: %" JSON_INTEGER_FORMAT ", store %.1f MB, map %.1f%% used",
		       json_integer_value(json_object_get(srv, "log_entries")),
		       (double)json_integer_value(json_object_get(srv, "store_bytes")) / 1e6,
		       json_real_value(json_object_get(srv, "map_use")) * 100);
	printf("\n\n%-22s %7s %7s %5s %7s %8s %5s %5s %6s %7s  %-20s %s\n", "COUNTY", "DEVICES",
	       "RECORDS", "CONFL", "BATCHES", "APPLIED", "DUP", "REJ", "UNSENT", "TO PULL",
	       "LAST PUSH", "SILENT DEVICES");
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(st, "counties"), i, c) {
		char name[128];
		snprintf(name, sizeof(name), "%s %s", json_string_value(json_object_get(c, "county")),
			 json_string_value(json_object_get(c, "name")));
		put_cell(name, 22);
		printf(" %7" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT " %5" JSON_INTEGER_FORMAT
		       " %7" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT " %5" JSON_INTEGER_FORMAT
		       " %5" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT "  ",
		       json_integer_value(json_object_get(c, "devices")),
		       json_integer_value(json_object_get(c, "records")),
		       json_integer_value(json_object_get(c, "open_conflicts")),
		       json_integer_value(json_object_get(c, "batches")),
		       json_integer_value(json_object_get(c, "changes_applied")),
		       json_integer_value(json_object_get(c, "duplicates")),
		       json_integer_value(json_object_get(c, "rejected")),
		       json_integer_value(json_object_get(c, "unsent")),
		       json_integer_value(json_object_get(c, "waiting_to_pull")));
		print_time(json_object_get(c, "last_push"));
		size_t k;
		json_t *d;
		json_array_foreach(json_object_get(c, "silent_devices"), k, d)
			printf(" %s", json_string_value(d));
		putchar('\n');
	}
	printf("\n%-16s %-20s %-6s %-11s %-7s %-20s %-20s %-10s %6s %7s %7s %4s %4s %7s %5s %-6s  %s\n",
	       "DEVICE", "NAME", "COUNTY", "ROLE", "REVOKED", "LAST PUSH", "LAST PULL", "APP", "UNSENT",
	       "BATCHES", "APPLIED", "DUP", "REJ", "TO PULL", "CONFL", "SILENT", "LAST REJECTION");
	json_array_foreach(json_object_get(st, "devices"), i, c) {
		printf("%-16s ", json_string_value(json_object_get(c, "id")));
		put_cell(json_string_value(json_object_get(c, "name")), 20);
		putchar(' ');
		put_cell(json_string_value(json_object_get(c, "county")), 6);
		putchar(' ');
		put_cell(json_string_value(json_object_get(c, "role")), 11);
		printf(" %-7s ", json_is_true(json_object_get(c, "revoked")) ? "yes" : "-");
		print_time(json_object_get(c, "last_push"));
		putchar(' ');
		print_time(json_object_get(c, "last_pull"));
		putchar(' ');
		put_cell(json_string_value(json_object_get(c, "app_version")), 10);
		printf(" %6" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT
		       " %4" JSON_INTEGER_FORMAT " %4" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT
		       " %5" JSON_INTEGER_FORMAT " %-6s  ",
		       json_integer_value(json_object_get(c, "unsent")),
		       json_integer_value(json_object_get(c, "batches")),
		       json_integer_value(json_object_get(c, "changes_applied")),
		       json_integer_value(json_object_get(c, "duplicates")),
		       json_integer_value(json_object_get(c, "rejected")),
		       json_integer_value(json_object_get(c, "waiting_to_pull")),
		       json_integer_value(json_object_get(c, "open_conflicts")),
		       json_is_true(json_object_get(c, "silent")) ? "yes" : "-");
		const char *rej = json_string_value(json_object_get(c, "last_rejection"));
		if (rej && *rej)
			put_cell(rej, 60);
		putchar('\n');
	}
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},	 {"forms", required_argument, 0, 'f'},
		{"json", no_argument, 0, 'j'},		 {"county", required_argument, 0, 'c'},
		{"silent-days", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'},
		{"all-counties", no_argument, 0, 'A'},	 {0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *forms = NULL;
	const char *counties[SCOPE_COUNTIES + 1];
	size_t n_counties = 0;
	struct status_opts so = {.scope = scope_all(), .silent_days = 7, .now_ms = sh_now_ms()};
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'f': forms = optarg; break;
		case 'j': json = true; break;
		case 'A': so.all_counties = true; break;
		case 'c': n_counties = parse_counties(optarg, counties, SCOPE_COUNTIES); break;
		case 's': so.silent_days = strtod(optarg, NULL); break;
		case 'h':
			printf("Usage: shahidi status [--data DIR] [--json] [--county CODES] [--silent-days N]\n"
			       "                      [--all-counties]\n\n"
			       "Sync status for field coordinators: per device (last push and pull,\n"
			       "app version, changes still on the phone, accepted, duplicates,\n"
			       "rejections, changes waiting for it to pull, open conflicts on its\n"
			       "records), per county (the same summed, and devices silent for more\n"
			       "than --silent-days, default 7), and store-wide. The same numbers as\n"
			       "the server's GET /v1/status and status page. --county 042,047 limits\n"
			       "it to those counties. Counties with no device and no record are left\n"
			       "out unless --all-counties. Reads the store directly, server running or\n"
			       "not.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	/* Names are UTF-8 whatever the user's locale: measure them as such. */
	if (!setlocale(LC_CTYPE, "") || MB_CUR_MAX == 1)
		setlocale(LC_CTYPE, "C.UTF-8");
	struct form_registry *reg = cli_load_forms(forms);
	struct store *s = NULL;
	json_t *st = NULL;
	int rc = 1, r;
	if (reg && (r = check_counties(reg, NULL, counties, n_counties))) {
		rc = r;
		goto out;
	}
	if (n_counties)
		so.scope = scope_none();
	for (size_t i = 0; i < n_counties; i++)
		if (scope_add(&so.scope, counties[i]) < 0) {
			cli_err("unknown county '%s'", counties[i]);
			rc = EXIT_USAGE;
			goto out;
		}
	if (!reg || !(s = cli_open_store(data, true)))
		goto out;
	if ((r = status_collect(s, reg, &so, &st)) < 0) {
		cli_err("cannot read the status: %s", sh_strerror(r));
		goto out;
	}
	if (json) {
		json_dumpf(st, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		print_status(st);
	}
	rc = 0;
out:
	json_decref(st);
	store_close(s);
	form_registry_free(reg);
	return rc;
}

/* ---- export ---- */

/* An export file is readable by its owner only (0600), whatever the umask
 * and even over an existing file: it holds survivors' records. The mode
 * is set before the old content is dropped and the new written. */
static FILE *export__open_private(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	if (fchmod(fd, 0600) < 0 || ftruncate(fd, 0) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	FILE *f = fdopen(fd, "wb");
	if (!f) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return f;
}

/* Makes dir if missing, its parents too (mkdir -p), private like the
 * store. 0 or -errno with the message printed. */
static int export__mkdir(const char *dir)
{
	char path[4096];
	int r;
	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1;; p++) {
		bool last = !*p;
		if (*p != '/' && !last)
			continue;
		*p = 0;
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			r = -errno;
			cli_err("cannot make %s: %s", path, strerror(errno));
			return r;
		}
		if (last)
			break;
		*p = '/';
	}
	return 0;
}

/* The long format into directory dir (made if missing): records.csv, one
 * CSV per repeat group, codebook.csv. Each page's rows of every table come
 * from one read transaction. 0 or -errno with the message printed. */
static int export_dir(const struct form_registry *reg, struct store *s,
		      const struct export_opts *eo, const char *dir, uint64_t *ret_records)
{
	struct export_long *x = NULL;
	struct buf *outs = NULL, cb = {0};
	FILE **f = NULL;
	size_t n = 0;
	char err[256], path[4096];
	int r;
	if ((r = export__mkdir(dir)) < 0)
		return r;
	if ((r = export_long_new(reg, eo, &x, err, sizeof(err))) < 0) {
		cli_err("%s", r == -ENOENT ? err : sh_strerror(r));
		return r;
	}
	n = export_long_tables(x);
	outs = calloc(n, sizeof(*outs));
	f = calloc(n, sizeof(*f));
	r = -ENOMEM;
	if (!outs || !f)
		goto done;
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s.csv", dir, export_long_table(x, i));
		if (!(f[i] = fopen(path, "wb"))) {
			r = -errno;
			cli_err("cannot write %s: %s", path, strerror(errno));
			goto done;
		}
		if ((r = export_long_header(x, i, &outs[i])) < 0)
			goto done;
	}
	uint64_t cursor = 0;
	bool end = false;
	while (!end) {
		int64_t k = export_long_page(x, s, &cursor, 1000, outs, &end);
		if ((r = (int)SH_MIN(k, 0)) < 0) {
			cli_err("export failed: %s", sh_strerror(r));
			goto done;
		}
		for (size_t i = 0; i < n; i++) {
			if (outs[i].len && fwrite(outs[i].data, 1, outs[i].len, f[i]) != outs[i].len) {
				r = -EIO;
				cli_err("cannot write: %s", strerror(errno));
				goto done;
			}
			buf_reset(&outs[i]);
		}
		store_release_pages(s);
	}
	snprintf(path, sizeof(path), "%s/codebook.csv", dir);
	FILE *cf = fopen(path, "wb");
	if (!cf || export_long_codebook(x, &cb) < 0 || fwrite(cb.data, 1, cb.len, cf) != cb.len ||
	    fclose(cf) != 0) {
		r = -EIO;
		cli_err("cannot write %s", path);
		goto done;
	}
	r = 0;
	for (size_t i = 0; i < n; i++) {
		if (fclose(f[i]) != 0 && !r) {
			r = -EIO;
			cli_err("cannot write %s/%s.csv", dir, export_long_table(x, i));
		}
		f[i] = NULL;
	}
	*ret_records = export_long_written(x);
done:
	for (size_t i = 0; f && i < n; i++)
		if (f[i])
			fclose(f[i]);
	for (size_t i = 0; outs && i < n; i++)
		buf_free(&outs[i]);
	free(outs);
	free(f);
	buf_free(&cb);
	export_long_free(x);
	return r;
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), k = strlen(tail);
	return n >= k && !strcmp(s + n - k, tail);
}

struct export_audit_ctx {
	const struct office_actor *actor;
	bool end;
	json_t *entry;
};

static int export__audit_fn(struct store_txn *t, void *ud)
{
	struct export_audit_ctx *c = ud;
	return office_api_export_audit(t, c->actor, c->end, c->entry);
}

/* Writes an export's audit entry (stolen) in a transaction of its own. */
static int export__audit(struct store *s, const struct office_actor *actor, bool end,
			 json_t *entry)
{
	struct export_audit_ctx c = {actor, end, entry};
	int r = entry ? store_write(s, export__audit_fn, &c) : -ENOMEM;
	json_decref(entry);
	return r;
}

int cmd_export(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},	  {"forms", required_argument, 0, 'f'},
		{"format", required_argument, 0, 'F'},	  {"form", required_argument, 0, 'm'},
		{"county", required_argument, 0, 'c'},	  {"since", required_argument, 0, 's'},
		{"include-deleted", no_argument, 0, 'D'}, {"include-sensitive", no_argument, 0, 'S'},
		{"out", required_argument, 0, 'o'},	  {"quiet", no_argument, 0, 'q'},
		{"threads", required_argument, 0, 't'},	  {"help", no_argument, 0, 'h'},
		{"with-files", required_argument, 0, 'W'}, {0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *forms = NULL, *out_path = NULL, *files_dir = NULL;
	const char *counties[SCOPE_COUNTIES + 1];
	char *tail;
	struct export_opts eo = {.format = EXPORT_CSV, .counties = counties};
	bool quiet = false, audited = false, format_given = false;
	int c;
	while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'f': forms = optarg; break;
		case 'm': eo.form_id = optarg; break;
		case 'o': out_path = optarg; break;
		case 'W': files_dir = optarg; break;
		case 'q': quiet = true; break;
		case 'D': eo.include_deleted = true; break;
		case 'S': eo.include_sensitive = true; break;
		case 'c': eo.n_counties = parse_counties(optarg, counties, SCOPE_COUNTIES); break;
		case 't':
			eo.threads = (unsigned)strtoul(optarg, &tail, 10);
			if (*tail || !eo.threads || eo.threads > EXPORT_MAX_THREADS) {
				cli_err("--threads takes 1 to %d", EXPORT_MAX_THREADS);
				return EXIT_USAGE;
			}
			break;
		case 'F':
			format_given = true;
			if (!strcmp(optarg, "csv"))
				eo.format = EXPORT_CSV;
			else if (!strcmp(optarg, "ndjson"))
				eo.format = EXPORT_NDJSON;
			else if (!strcmp(optarg, "xlsx"))
				eo.format = EXPORT_XLSX;
			else if (!strcmp(optarg, "sav"))
				eo.format = EXPORT_SAV;
			else if (!strcmp(optarg, "dta"))
				eo.format = EXPORT_DTA;
			else {
				cli_err("--format takes csv, ndjson, xlsx, sav or dta");
				return EXIT_USAGE;
			}
			break;
		case 's':
			if (render_parse_time(optarg, &eo.since_ms) < 0) {
				cli_err("--since takes YYYY-MM-DD[THH:MM[:SS]] (UTC) or milliseconds");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			printf("Usage: shahidi export [--data DIR] --format csv|ndjson [OPTIONS]\n"
			       "       shahidi export [--data DIR] --format xlsx|sav|dta --out PATH [OPTIONS]\n\n"
			       "Writes the merged current records. CSV (RFC 4180, UTF-8): record id,\n"
			       "form id and version, first received, last changed, devices, deleted and\n"
			       "conflict flags, device names, then one column per form field in form\n"
			       "order (every version of the form side by side), choice labels, several\n"
			       "choices joined by \"; \", a GPS point as \"lat,lon\" and then in four columns\n"
			       "NAME_latitude, _longitude, _altitude, _accuracy. NDJSON: one JSON object\n"
			       "per record, choice codes. Streams page by page in constant memory; works\n"
			       "while the server runs. Each export is written to the audit log\n"
			       "(shahidi audit).\n\n"
			       "XLSX (--out FILE.xlsx; --format xlsx may then be left out): one sheet\n"
			       "per table (records, then one per repeat group, as the long format),\n"
			       "numbers, dates and yes/no typed, choice labels, GPS as NAME_latitude,\n"
			       "_longitude, _altitude, _accuracy, device names beside device ids, and a\n"
			       "codebook sheet. SPSS (sav) and Stata (dta) (--out DIR, made if\n"
			       "missing): DIR/records.sav, DIR/victims.sav, ... and\n"
			       "DIR/codebook.csv; choices are numbers with value labels, variable labels\n"
			       "are the form's field labels, names made valid for the format (the\n"
			       "codebook maps them). Temporary files go to the data directory.\n\n"
			       "  --form ID            which form (default incident_report)\n"
			       "  --county CODES       only these counties (042,047)\n"
			       "  --since TIME         only records changed since (YYYY-MM-DD[THH:MM], UTC)\n"
			       "  --include-deleted    deleted records too\n"
			       "  --include-sensitive  fields marked sensitive (names, phone numbers,\n"
			       "                       narratives...): only with the survivor's consent\n"
			       "  --out FILE           write there (default standard output)\n"
			       "  --out DIR            CSV only, DIR not ending in .csv: the long format,\n"
			       "                       one table per repeat group (made if missing):\n"
			       "                       records.csv, victims.csv, ... keyed by record_id and\n"
			       "                       instance_id (parent_instance_id when nested), and\n"
			       "                       codebook.csv describing every column\n"
			       "  --threads N          render on N threads (default one per core)\n"
			       "  --with-files DIR     also the attachments: DIR/sha256/HASH (hard links\n"
			       "                       where possible) and DIR/manifest.csv (record id,\n"
			       "                       field, file id, SHA-256, size, media type,\n"
			       "                       received at, uploaded by); files of sensitive\n"
			       "                       fields only with --include-sensitive\n"
			       "  --quiet              no progress on standard error\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	/* --out FILE.xlsx alone asks for a workbook, not a folder of CSVs
	 * named FILE.xlsx */
	if (!format_given && out_path && ends_with(out_path, ".xlsx"))
		eo.format = EXPORT_XLSX;
	struct form_registry *reg = cli_load_forms(forms);
	struct store *s = NULL;
	struct exporter *x = NULL;
	struct buf b = {0};
	FILE *out = NULL;
	char err[256], id[17];
	struct office_actor actor;
	int rc = 1, r;
	if (reg && (r = check_counties(reg, eo.form_id ? eo.form_id : "incident_report", counties,
				       eo.n_counties))) {
		rc = r;
		goto done;
	}
	if (!reg || !(s = cli_open_existing_store(data)))
		goto done;
	uint64_t records = 0, t0 = sh_mono_ns();
	bool tty = !quiet && isatty(2);
	bool dir = eo.format == EXPORT_CSV && out_path && !ends_with(out_path, ".csv");
	bool whole = eo.format == EXPORT_XLSX || eo.format == EXPORT_SAV || eo.format == EXPORT_DTA;
	if (whole && !out_path) {
		cli_err("--format %s writes files: give --out %s", export_format_name(eo.format),
			eo.format == EXPORT_XLSX ? "FILE.xlsx" : "DIR");
		rc = EXIT_USAGE;
		goto done;
	}
	if (whole && eo.format != EXPORT_XLSX && export__mkdir(out_path) < 0)
		goto done;
	if (!dir && !whole && (r = export_new(reg, &eo, &x, err, sizeof(err))) < 0) {
		cli_err("%s", r == -ENOENT ? err : sh_strerror(r));
		goto done;
	}
	/* Audited first, as over HTTP: the entry is written before any
	 * record is, and an export_end says how it ended. */
	office_api_actor_cli(&actor);
	snprintf(id, sizeof(id), "%016" PRIx64, sh_now_ms() << 16 | ((uint64_t)getpid() & 0xffff));
	r = export__audit(s, &actor, false, office_api_export_start_entry(id, &eo));
	if (r < 0) {
		cli_err("cannot write the audit log (%s): nothing exported", sh_strerror(r));
		goto done;
	}
	audited = true;
	if (whole) {
		r = eo.format == EXPORT_XLSX
			    ? export_xlsx_write(reg, &eo, s, out_path, data, &records, err, sizeof(err))
			    : export_stat_write(reg, &eo, s, out_path, data, &records, err, sizeof(err));
		if (r < 0) {
			cli_err("%s", err);
			goto done;
		}
		goto finished;
	}
	if (dir) {
		if (export_dir(reg, s, &eo, out_path, &records) < 0)
			goto done;
		goto finished;
	}
	out = out_path ? export__open_private(out_path) : stdout;
	if (!out) {
		cli_err("cannot write %s: %s", out_path, strerror(errno));
		goto done;
	}
	uint64_t cursor = 0;
	bool end = false;
	export_header(x, &b);
	while (!end) {
		int64_t n = export_page(x, s, &cursor, 10000, &b, &end);
		if (n < 0) {
			cli_err("export failed: %s", sh_strerror((int)n));
			goto done;
		}
		if (b.len && fwrite(b.data, 1, b.len, out) != b.len) {
			cli_err("cannot write: %s", strerror(errno));
			goto done;
		}
		buf_reset(&b);
		store_release_pages(s); /* constant memory, whatever the store's size */
		if (tty)
			fprintf(stderr, "\rexported %" PRIu64 " records (%" PRIu64 " read)",
				export_written(x), export_scanned(x));
	}
	if (fflush(out) != 0 || (out != stdout && fclose(out) != 0)) {
		out = NULL;
		cli_err("cannot write %s", out_path ? out_path : "standard output");
		goto done;
	}
	if (out != stdout)
		out = NULL;
	records = export_written(x);
	if (tty)
		fputc('\r', stderr);
finished:;
	double secs = (double)(sh_mono_ns() - t0) / 1e9;
	if (!quiet)
		fprintf(stderr, "%sexported %" PRIu64 " records in %.2f s\n", tty ? "\r" : "", records,
			secs);
	if (files_dir) {
		size_t nf = 0, skipped = 0;
		if ((r = upload_export_files(s, reg, data, files_dir, eo.include_sensitive, counties,
					     eo.n_counties, &nf, &skipped)) < 0) {
			cli_err("cannot write the files to %s: %s", files_dir, sh_strerror(r));
			goto done;
		}
		if (!quiet)
			fprintf(stderr, "wrote %zu files and %s/manifest.csv%s\n", nf, files_dir,
				skipped ? " (files of sensitive fields left out: --include-sensitive)"
					: "");
	}
	rc = 0;
done:
	if (audited)
		export__audit(s, &actor, true,
			      office_api_export_end_entry(id, x ? export_written(x) : records,
							  rc == 0 ? "complete" : "failed"));
	if (out && out != stdout)
		fclose(out);
	buf_free(&b);
	export_free(x);
	store_close(s);
	form_registry_free(reg);
	return rc;
}

/* ---- history ---- */

int cmd_history(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'}, {"forms", required_argument, 0, 'f'},
		{"json", no_argument, 0, 'j'},	     {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *forms = NULL;
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'f': forms = optarg; break;
		case 'j': json = true; break;
		case 'h':
			printf("Usage: shahidi history [--data DIR] [--json] RECORD_ID\n\n"
			       "A record's custody trail: every change to it from the change log, in\n"
			       "order, as received: when, from which device and batch, its stamps, its\n"
			       "link in the hash chain, and the values it set.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	uint8_t id[16];
	if (optind != argc - 1 || uuid_parse(argv[optind], id) < 0) {
		cli_err("history needs one record id, a UUID (see --help)");
		return EXIT_USAGE;
	}
	struct form_registry *reg = cli_load_forms(forms);
	struct store *s = reg ? cli_open_store(data, true) : NULL;
	json_t *h = NULL;
	int rc = 1, r;
	if (!s)
		goto out;
	if ((r = status_history(s, reg, id, &h, NULL, 0)) < 0) {
		cli_err(r == -ENOENT ? "no record %s" : "cannot read its history: %s",
			r == -ENOENT ? argv[optind] : sh_strerror(r));
		goto out;
	}
	if (json) {
		json_dumpf(h, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		size_t i;
		json_t *e;
		printf("record %s: %" JSON_INTEGER_FORMAT " changes\n", argv[optind],
		       json_integer_value(json_object_get(h, "changes")));
		json_array_foreach(json_object_get(h, "history"), i, e) {
			printf("\n#%" JSON_INTEGER_FORMAT " received %s from %s (batch %" JSON_INTEGER_FORMAT
			       ", change %" JSON_INTEGER_FORMAT ")\n   stamp %s%s%s\n   hash %s\n",
			       json_integer_value(json_object_get(e, "log_seq")),
			       json_string_value(json_object_get(e, "received")),
			       json_string_value(json_object_get(e, "pushed_by")),
			       json_integer_value(json_object_get(e, "batch_seq")),
			       json_integer_value(json_object_get(e, "change_id")),
			       json_string_value(json_object_get(e, "stamp")),
			       *json_string_value(json_object_get(e, "stored_stamp")) ? ", stored as " : "",
			       json_string_value(json_object_get(e, "stored_stamp")),
			       json_string_value(json_object_get(e, "hash")));
			size_t k;
			json_t *f;
			json_array_foreach(json_object_get(e, "fields"), k, f)
				printf("   %-26s %.*s\n", json_string_value(json_object_get(f, "name")),
				       100, json_string_value(json_object_get(f, "value")));
			if (json_object_get(e, "deleted"))
				printf("   %-26s %s\n", "(deletion)",
				       json_is_true(json_object_get(e, "deleted")) ? "deleted" : "undeleted");
		}
	}
	rc = 0;
out:
	json_decref(h);
	store_close(s);
	form_registry_free(reg);
	return rc;
}

/* ---- conflicts resolve ---- */

struct resolve_ctx {
	const struct form_registry *forms;
	uint64_t actor;
	struct office_resolve q;
	struct office_verdict v;
	uint64_t log_seq;
};

/* As the device --as, with the rights the server gives its token over
 * HTTP (office_api_actor_device): a coordinator or an admin, not revoked;
 * a coordinator only in its counties (a record outside them looks absent,
 * -ENOENT). -EPERM otherwise. */
static int resolve_fn(struct store_txn *t, void *ud)
{
	struct resolve_ctx *c = ud;
	struct office_actor actor;
	int r = office_api_actor_device(t, c->actor, &actor);
	if (r < 0)
		return r;
	return office_api_resolve(t, c->forms, &actor, &c->q, sh_now_ms(), &c->log_seq, &c->v);
}

int cli_conflicts_resolve(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},	{"forms", required_argument, 0, 'f'},
		{"as", required_argument, 0, 'a'},	{"take", required_argument, 0, 't'},
		{"value", required_argument, 0, 'v'},	{"deleted", required_argument, 0, 'D'},
		{"instance", required_argument, 0, 'i'}, {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	uint8_t inst[16];
	const char *data = CLI_DEFAULT_DATA, *forms = NULL, *value = NULL;
	struct resolve_ctx ctx = {0};
	int how = -1, c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'f': forms = optarg; break;
		case 'a':
			if (sh_device_parse(optarg, &ctx.actor) < 0) {
				cli_err("--as takes a coordinator's or admin's device id");
				return EXIT_USAGE;
			}
			break;
		case 't':
			how = RESOLVE_TAKE;
			if (sh_device_parse(optarg, &ctx.q.take_device) < 0) {
				cli_err("--take takes the device id whose value wins");
				return EXIT_USAGE;
			}
			break;
		case 'v': how = RESOLVE_VALUE; value = optarg; break;
		case 'i':
			if (uuid_parse(optarg, inst) < 0) {
				cli_err("--instance takes a repeat-group instance's id (a UUID)");
				return EXIT_USAGE;
			}
			ctx.q.instance = inst;
			break;
		case 'D':
			how = RESOLVE_DELETED;
			ctx.q.deleted = !strcmp(optarg, "yes");
			if (strcmp(optarg, "yes") && strcmp(optarg, "no")) {
				cli_err("--deleted takes yes or no");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			printf("Usage: shahidi conflicts resolve [--data DIR] --as DEVICE RECORD_ID FIELD\n"
			       "                                 --take DEVICE | --value JSON\n"
			       "       shahidi conflicts resolve [--data DIR] --as DEVICE RECORD_ID --deleted yes|no\n\n"
			       "Resolves an open conflict as a coordinator (or admin) device: keep the\n"
			       "value one device wrote (--take), or write another (--value, JSON: \"text\",\n"
			       "42, true, [\"code\", ...]). For a record edited while it was deleted,\n"
			       "--deleted yes confirms the deletion, no keeps the record. The resolution\n"
			       "is a change like any other: it is logged, and phones that hold the\n"
			       "record pull it. FIELD is a field name or number.\n\n"
			       "  --instance ID   a field of that repeat-group instance (shahidi conflicts\n"
			       "                  shows group[ID].field); with --deleted, the instance's\n"
			       "                  removal: yes confirms it, no restores the instance\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	int need = how == RESOLVE_DELETED ? 1 : 2;
	if (how < 0 || !ctx.actor || argc - optind != need ||
	    uuid_parse(argv[optind], ctx.q.record_id) < 0) {
		cli_err("resolve needs --as, a record id, a field and --take, --value or --deleted (see --help)");
		return EXIT_USAGE;
	}
	ctx.q.how = (enum resolve_how)how;
	struct form_registry *reg = cli_load_forms(forms);
	struct store *s = reg ? cli_open_existing_store(data) : NULL;
	struct buf vb = {0};
	int rc = 1, r;
	if (!s)
		goto out;
	ctx.forms = reg;
	char rid[UUID_STR_LEN + 1];
	uuid_fmt(ctx.q.record_id, rid);
	if (how != RESOLVE_DELETED) {
		/* the field by name or number, in the record's form */
		const char *fname = argv[optind + 1];
		struct store_txn *t;
		struct arena *a = arena_new();
		merge_rec_t *rec;
		const struct form *f = NULL;
		if (a && store_begin(s, false, &t) == 0) {
			if (store_record_get(t, a, ctx.q.record_id, &rec) == 0)
				f = form_registry_find(reg, rec->form_id, rec->form_version);
			store_abort(t);
		}
		arena_free(a);
		if (!f) {
			cli_err("no record %s (or its form is not loaded)", rid);
			goto out;
		}
		const struct form_field *fd = NULL;
		for (size_t i = 0; i < f->n_fields && !fd; i++)
			if (!strcmp(f->fields[i].name, fname) ||
			    f->fields[i].number == (uint32_t)strtoul(fname, NULL, 10))
				fd = &f->fields[i];
		if (!fd) {
			cli_err("form %s has no field %s", f->form_id, fname);
			goto out;
		}
		ctx.q.field_number = fd->number;
		if (how == RESOLVE_VALUE) {
			json_error_t je;
			json_t *jv = json_loads(value, JSON_DECODE_ANY, &je);
			char err[200];
			if (!jv)
				jv = json_string(value); /* plain text needs no quotes */
			ctx.q.value = jv;
			if (render_value_encode(fd, jv, &vb, err, sizeof(err)) < 0) {
				cli_err("%s", err);
				goto out;
			}
		}
	}
	char hex[17];
	sh_device_fmt(ctx.actor, hex);
	r = store_write(s, resolve_fn, &ctx);
	if (r == -ENOENT)
		cli_err("no record %s, or no device %s", rid, hex);
	else if (r == -EPERM)
		cli_err("device %s may not resolve conflicts (a coordinator's or admin's, not revoked)",
			hex);
	else if (r == -EINVAL || r == -EALREADY)
		cli_err("%s", ctx.v.msg);
	else if (r < 0)
		cli_err("cannot resolve: %s", sh_strerror(r));
	else {
		printf("resolved: log entry %" PRIu64 "\n", ctx.log_seq);
		rc = 0;
	}
out:
	json_decref(ctx.q.value);
	buf_free(&vb);
	store_close(s);
	form_registry_free(reg);
	return rc;
}

/* ---- assign ---- */

struct assign_ctx {
	const struct form_registry *forms;
	uint8_t id[16];
	uint64_t device;
	struct office_verdict v;
};

static int assign_fn(struct store_txn *t, void *ud)
{
	struct assign_ctx *c = ud;
	struct office_actor actor;
	office_api_actor_cli(&actor);
	return office_api_assign(t, c->forms, &actor, c->id, c->device, &c->v);
}

int cmd_assign(int argc, char **argv)
{
	struct assign_ctx ctx = {0};
	const char *data;
	int rc;
	if (!cli_data_only(argc, argv,
			   "Usage: shahidi assign [--data DIR] RECORD_ID DEVICE_ID\n\n"
			   "Assigns a record to a device: its next pull brings the record's whole\n"
			   "history, and later changes follow. Phones otherwise hold only what they\n"
			   "wrote: a seized phone must not carry the organisation's records.\n",
			   &data, &rc))
		return rc;
	if (argc - optind != 2 || uuid_parse(argv[optind], ctx.id) < 0 ||
	    sh_device_parse(argv[optind + 1], &ctx.device) < 0) {
		cli_err("assign needs a record id and a device id (see --help)");
		return EXIT_USAGE;
	}
	struct form_registry *reg = cli_load_forms(NULL);
	struct store *s = reg ? cli_open_store(data, false) : NULL;
	if (!s) {
		form_registry_free(reg);
		return 1;
	}
	ctx.forms = reg;
	int r = store_write(s, assign_fn, &ctx);
	store_close(s);
	form_registry_free(reg);
	if (r < 0) {
		cli_err(r == -ENOENT ? "no such record or device" : "cannot assign: %s", sh_strerror(r));
		return 1;
	}
	printf("assigned %s to %s\n", argv[optind], argv[optind + 1]);
	return 0;
}

/* ---- audit (backup and restore: cmd_backup.c) ---- */

int cmd_audit(int argc, char **argv)
{
	const char *data;
	int rc;
	if (!cli_data_only(argc, argv,
			   "Usage: shahidi audit [--data DIR]\n\n"
			   "Prints the audit log, one JSON object per line: every export,\n"
			   "resolution, assignment and device change made at the office, with\n"
			   "who made it and when.\n",
			   &data, &rc))
		return rc;
	struct store *s = cli_open_store(data, true);
	struct arena *a = arena_new();
	struct store_txn *t = NULL;
	int r;
	rc = 1;
	if (!s || !a || store_begin(s, false, &t) < 0)
		goto out;
	uint64_t seq = 0;
	char *j;
	while ((r = store_audit_next(t, a, &seq, &j)) == 1) {
		puts(j);
		arena_reset(a);
	}
	rc = r < 0 ? 1 : 0;
out:
	store_abort(t);
	arena_free(a);
	store_close(s);
	return rc;
}
