/* shahidi export: the merged records as CSV (one file, or the long
 * format's folder), NDJSON, XLSX, SPSS or Stata, and the attachments with
 * their manifest; audited as the server's exports are. */
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
		case 'c': eo.n_counties = cli_parse_counties(optarg, counties, SCOPE_COUNTIES); break;
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
	if (reg && (r = cli_check_counties(reg, eo.form_id ? eo.form_id : "incident_report", counties,
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

