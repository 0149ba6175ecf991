/* shahidi status | history | assign | audit, and `conflicts resolve`:
 * what coordinators and admins do at the office (export: cmd_export.c;
 * backup and restore: cmd_backup.c). They
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

size_t cli_parse_counties(const char *arg, const char **out, size_t max)
{
	static char buf[512];
	size_t n = 0;
	snprintf(buf, sizeof(buf), "%s", arg);
	for (char *tok = strtok(buf, ", "); tok && n < max; tok = strtok(NULL, ", "))
		out[n++] = tok;
	return n;
}

int cli_check_counties(const struct form_registry *reg, const char *form_id,
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
		case 'c': n_counties = cli_parse_counties(optarg, counties, SCOPE_COUNTIES); break;
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
	if (reg && (r = cli_check_counties(reg, NULL, counties, n_counties))) {
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
	if ((r = status_history(s, reg, id, scope_of_cli().sensitive, &h, NULL, 0)) < 0) {
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
			       "record pull it. FIELD is a field name or number. A field the form\n"
			       "marks sensitive is resolved by an admin's device only.\n\n"
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
	else if (r == -EPERM && ctx.v.code[0])
		cli_err("%s (%s)", ctx.v.msg, ctx.v.code); /* e.g. a sensitive field: an admin's */
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
