/* shahidi demo | sample | ingest | show | conflicts | rebuild: commands that
 * work on a data directory directly, with or without the server running. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "auth.h"
#include "cli.h"
#include "codec.h"
#include "common.h"
#include "gen.h"
#include "hlc.h"
#include "rebuild.h"
#include "render.h"
#include "shahidi.pb-c.h"
#include "sync.h"
#include "uuid.h"

/* ---- sample ---- */

struct sample_opts {
	uint64_t device;
	uint64_t seed;
	uint64_t batch_seq;
	uint64_t first_change;
	unsigned count;
	enum codec_enc enc;
};

/* Builds an encoded, compressed PushBatch of synthetic reports. */
static int make_sample(const struct form *f, const struct sample_opts *o, struct buf *out)
{
	struct arena *a = arena_new();
	struct gen_rng rng = {o->seed};
	struct hlc clock = {0};
	int r = -ENOMEM;
	if (!a)
		return -ENOMEM;
	uint64_t now = sh_now_ms();
	Shahidi__V1__PushBatch pb = SHAHIDI__V1__PUSH_BATCH__INIT;
	pb.device = o->device;
	pb.batch_seq = o->batch_seq;
	pb.app_version = "shahidi-cli " SHAHIDI_VERSION;
	pb.changes = arena_alloc(a, (o->count + 1) * sizeof(*pb.changes));
	if (!pb.changes)
		goto out;
	for (unsigned i = 0; i < o->count; i++) {
		pb.changes[i] = gen_report(&rng, a, f, o->first_change + i, hlc_tick(&clock, now), now);
		if (!pb.changes[i])
			goto out;
	}
	pb.n_changes = o->count;
	pb.sent_hlc = hlc_tick(&clock, now);
	struct buf raw = {0};
	if ((r = buf_reserve(&raw, shahidi__v1__push_batch__get_packed_size(&pb))) < 0)
		goto out;
	raw.len = shahidi__v1__push_batch__pack(&pb, raw.data);
	if (o->enc == CODEC_IDENTITY)
		r = buf_append(out, raw.data, raw.len);
	else
		r = codec_deflate(raw.data, raw.len, o->enc, 6, out);
	buf_free(&raw);
out:
	arena_free(a);
	return r;
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

int cmd_sample(int argc, char **argv)
{
	static const struct option opts[] = {
		{"device", required_argument, 0, 'd'}, {"count", required_argument, 0, 'n'},
		{"seed", required_argument, 0, 's'},   {"batch-seq", required_argument, 0, 'b'},
		{"first-change", required_argument, 0, 'c'}, {"encoding", required_argument, 0, 'e'},
		{"out", required_argument, 0, 'o'},    {"forms", required_argument, 0, 'f'},
		{"form-version", required_argument, 0, 'v'}, {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	struct sample_opts o = {.seed = 1, .batch_seq = 1, .first_change = 1, .count = 10,
				.enc = CODEC_DEFLATE};
	const char *out = NULL, *forms = NULL;
	uint64_t n, version = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (sh_device_parse(optarg, &o.device) < 0) {
				cli_err("--device takes the 16 hex digits 'shahidi device list' shows");
				return EXIT_USAGE;
			}
			break;
		case 'n':
			if (parse_u64(optarg, &n) < 0 || n < 1 || n > 100000) {
				cli_err("--count takes 1 to 100000");
				return EXIT_USAGE;
			}
			o.count = (unsigned)n;
			break;
		case 's':
		case 'b':
		case 'c':
		case 'v':
			if (parse_u64(optarg, c == 's' ? &o.seed : c == 'b' ? &o.batch_seq
							 : c == 'c' ? &o.first_change : &version) < 0) {
				cli_err("--%s takes a number", c == 's' ? "seed" : c == 'b' ? "batch-seq" : c == 'c' ? "first-change" : "form-version");
				return EXIT_USAGE;
			}
			break;
		case 'e':
			if (!strcmp(optarg, "none"))
				o.enc = CODEC_IDENTITY;
			else if (codec_enc_parse(optarg, strlen(optarg), &o.enc) < 0) {
				cli_err("--encoding takes deflate, gzip or none");
				return EXIT_USAGE;
			}
			break;
		case 'o':
			out = optarg;
			break;
		case 'f':
			forms = optarg;
			break;
		case 'h':
			printf("Usage: shahidi sample --device ID --out FILE [OPTIONS]\n\n"
			       "Writes a push batch of synthetic incident reports (realistic content\n"
			       "from the form's vocabularies, version 7 record ids), for trying the\n"
			       "API and for tests.\n\n"
			       "  --device ID         device id (16 hex digits) the batch is from\n"
			       "  --out FILE          where to write it ('-' for standard output)\n"
			       "  --count N           reports in the batch (default 10)\n"
			       "  --seed N            random seed (default 1): same seed, same reports\n"
			       "  --batch-seq N       the batch's number (default 1)\n"
			       "  --first-change N    change id of the first report (default 1)\n"
			       "  --encoding E        deflate (default), gzip or none\n"
			       "  --forms PATH        extra form definitions (file or directory)\n"
			       "  --form-version N    version of incident_report to fill (default 1)\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (!o.device || !out) {
		cli_err("sample needs --device and --out (see --help)");
		return EXIT_USAGE;
	}
	struct form_registry *reg = cli_load_forms(forms);
	if (!reg)
		return 1;
	const struct form *f = form_registry_find(reg, "incident_report", (uint32_t)version);
	int rc = 1;
	struct buf b = {0};
	if (!f) {
		cli_err("form incident_report version %" PRIu64 " is not loaded", version);
	} else if (make_sample(f, &o, &b) < 0 || cli_write_file(out, b.data, b.len) < 0) {
		cli_err("cannot write %s: %s", out, strerror(errno));
	} else {
		rc = 0;
	}
	buf_free(&b);
	form_registry_free(reg);
	return rc;
}

/* ---- ingest ---- */

struct apply_ctx {
	struct sync_batch *batch;
	struct sync_result res;
	uint64_t now;
};

static int apply_fn(struct store_txn *t, void *ud)
{
	struct apply_ctx *c = ud;
	return sync_apply(t, c->batch, c->now, &c->res);
}

static const char *status_name(int s)
{
	switch (s) {
	case SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED:
		return "applied";
	case SHAHIDI__V1__CHANGE_RESULT__STATUS__DUPLICATE:
		return "duplicate";
	case SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED:
		return "rejected";
	default:
		return "unknown";
	}
}

int cli_print_push_response(const uint8_t *p, size_t n, bool quiet)
{
	Shahidi__V1__PushResponse *resp = shahidi__v1__push_response__unpack(NULL, n, p);
	if (!resp)
		return -EPROTO;
	unsigned counts[4] = {0};
	for (size_t i = 0; i < resp->n_results; i++) {
		const Shahidi__V1__ChangeResult *x = resp->results[i];
		counts[x->status & 3]++;
		if (quiet && x->status != SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED)
			continue;
		printf("change %" PRIu64 ": %s", x->change_id, status_name(x->status));
		if (x->status == SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED)
			printf(" %s: %s", x->code, x->reason);
		if (x->stored_hlc) {
			char st[48];
			hlc_fmt(x->stored_hlc, st, sizeof(st));
			printf(" (clock too far ahead: stored under %s)", st);
		}
		putchar('\n');
	}
	printf("batch %" PRIu64 ": %u applied, %u duplicate, %u rejected", resp->batch_seq,
	       counts[1], counts[2], counts[3]);
	if (resp->clock_offset_ms > 60000 || resp->clock_offset_ms < -60000)
		printf("; device clock off by %+" PRId64 " s", resp->clock_offset_ms / 1000);
	putchar('\n');
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	return 0;
}

/* Decodes and applies one batch file. Returns the exit code. */
int cli_ingest_bytes(struct store *s, const struct form_registry *reg, const uint8_t *body,
		      size_t len, bool quiet)
{
	struct sync_limits lim;
	struct form_verdict v = {{0}};
	struct apply_ctx ctx = {.now = sh_now_ms()};
	sync_limits_default(&lim);
	int r = sync_decode(reg, &lim, body, len, CODEC_AUTO, ctx.now, &ctx.batch, &v);
	if (r < 0) {
		cli_err("batch refused: %s: %s", v.code[0] ? v.code : "error",
			v.reason[0] ? v.reason : sh_strerror(r));
		return 1;
	}
	r = store_write(s, apply_fn, &ctx);
	int rc = 1;
	if (r == -EEXIST) {
		cli_err("batch %" PRIu64 " of device %016" PRIx64
			" was received before with other content: refused, nothing stored",
			sync_batch_seq(ctx.batch), sync_batch_device(ctx.batch));
	} else if (r == -ENOENT) {
		cli_err("device %016" PRIx64 " is not enrolled (shahidi device enroll)",
			sync_batch_device(ctx.batch));
	} else if (r < 0) {
		cli_err("cannot apply the batch: %s", sh_strerror(r));
	} else {
		if (ctx.res.replay)
			printf("batch received before: same answer as then, nothing changed\n");
		cli_print_push_response(ctx.res.response, ctx.res.response_len, quiet);
		rc = 0;
	}
	sync_batch_free(ctx.batch);
	return rc;
}

int cmd_ingest(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'}, {"forms", required_argument, 0, 'f'},
		{"quiet", no_argument, 0, 'q'},      {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *forms = NULL;
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			data = optarg;
			break;
		case 'f':
			forms = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			printf("Usage: shahidi ingest [--data DIR] [--forms PATH] [--quiet] FILE...\n\n"
			       "Applies push batch files (protobuf PushBatch, deflate, gzip or plain:\n"
			       "detected) to the store exactly as the server does, and prints each\n"
			       "change's result. Works while the server runs. The pushing device must\n"
			       "be enrolled. --quiet prints only rejections and the summary.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		cli_err("ingest needs a batch file (see --help)");
		return EXIT_USAGE;
	}
	struct form_registry *reg = cli_load_forms(forms);
	if (!reg)
		return 1;
	struct store *s = cli_open_store(data, false);
	int rc = 1;
	if (!s)
		goto out;
	rc = 0;
	for (int i = optind; i < argc; i++) {
		uint8_t *body;
		size_t len;
		int r = cli_read_file(argv[i], &body, &len);
		if (r < 0) {
			cli_err("%s: %s", argv[i], strerror(-r));
			rc = 1;
			continue;
		}
		if (cli_ingest_bytes(s, reg, body, len, quiet) != 0)
			rc = 1;
		free(body);
	}
out:
	store_close(s);
	form_registry_free(reg);
	return rc;
}

/* ---- show and conflicts ---- */

static void print_entry(const struct form_field *fd, const merge_entry_t *e, const char *indent)
{
	struct buf b = {0};
	char st[48], dev[17];
	render_value_text(fd, e->value.data, e->value.len, true, &b);
	buf_putc(&b, '\0');
	hlc_fmt(e->hlc, st, sizeof(st));
	sh_device_fmt(e->device, dev);
	const char *text = b.len > 1 ? (const char *)b.data : "(cleared)";
	printf("%s%-.*s%s  [%s by %s]\n", indent, 70, text, strlen(text) > 70 ? "..." : "", st, dev);
	buf_free(&b);
}

void cli_print_record(const merge_rec_t *rec, const struct form *f, bool conflicts_only)
{
	char id[UUID_STR_LEN + 1], t1[32], t2[32];
	uuid_fmt(rec->record_id.data, id);
	render_time_ms(rec->first_received_ms, t1);
	render_time_ms(rec->last_changed_ms, t2);
	printf("record %s  %s v%u%s\n", id, rec->form_id, rec->form_version,
	       merge_is_deleted(rec) ? "  DELETED" : "");
	if (!conflicts_only) {
		printf("  first received %s, last changed %s, %" PRIu64 " change%s, devices:", t1, t2,
		       rec->changes, rec->changes == 1 ? "" : "s");
		for (size_t i = 0; i < rec->n_writers; i++)
			printf(" %016" PRIx64, rec->writers[i]);
		putchar('\n');
	}
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		if (reg->field == MERGE_DELETION_FIELD)
			continue;
		const struct form_field *fd = f ? form_field(f, reg->field) : NULL;
		char name[160];
		/* an instance's field: group[INSTANCE_ID].field, the id as
		 * `conflicts resolve --instance` takes it */
		render_reg_path(rec, f, reg, false, name, sizeof(name));
		size_t live = merge_live_count(reg);
		if (live > 1 && merge_reg_in_instance(reg)) {
			const struct form_group *g = render_instance_group(rec, f, reg->instance.data);
			printf("  %s\n  %-26s CONFLICT (%s: %s): %zu values, the first one shown wins "
			       "until resolved\n", name, "", g && g->label ? g->label : "?",
			       fd && fd->label ? fd->label : "?", live);
		} else if (live > 1)
			printf("  %-26s CONFLICT: %zu values, the first one shown wins until resolved\n",
			       name, live);
		if (live > 1) {
			const merge_entry_t *cur = merge_current(reg);
			print_entry(fd, cur, "      ");
			for (size_t k = 0; k < reg->n_entries; k++) {
				const merge_entry_t *e = reg->entries[k];
				if (e != cur && !e->dead && !e->pending)
					print_entry(fd, e, "      ");
			}
		} else if (!conflicts_only && live == 1) {
			printf("  %-26s ", name);
			print_entry(fd, merge_current(reg), "");
		}
	}
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		int flag = merge_reg_in_instance(reg) && reg->field == MERGE_DELETION_FIELD
				   ? merge_instance_flag(rec, reg->instance.data) : 0;
		const merge_entry_t *rm = merge_current(reg);
		if (!flag || !rm)
			continue;
		char name[160], st[48];
		const struct form_group *g = render_instance_group(rec, f, reg->instance.data);
		render_reg_path(rec, f, reg, false, name, sizeof(name));
		hlc_fmt(rm->hlc, st, sizeof(st));
		/* both reasons, when both hold, as render_record_json lists them */
		bool linked = flag == 2 || render_instance_linked(rec, reg->instance.data);
		printf("  %s\n  %-26s CONFLICT (%s): removed by %016" PRIx64 " at %s, %s%s\n", name,
		       "", g && g->label ? g->label : "?", rm->device, st,
		       flag == 1 ? "edited since by a device that had not seen the removal"
				 : "still linked to by a live value",
		       flag == 1 && linked ? "; still linked to by a live value" : "");
	}
	if (rec->delete_conflict) {
		const merge_entry_t *del = merge_current(merge_register(rec, MERGE_DELETION_FIELD));
		char st[48];
		hlc_fmt(del->hlc, st, sizeof(st));
		printf("  %-26s CONFLICT: deleted by %016" PRIx64 " at %s, edited since by another device\n",
		       "(deletion)", del->device, st);
	}
}

static int show_usage(const char *cmd)
{
	if (!strcmp(cmd, "show"))
		printf("Usage: shahidi show [--data DIR] [--forms PATH] [--json] RECORD_ID\n\n"
		       "Prints a merged record: each field's current value with the stamp (HLC)\n"
		       "and device of the write that set it, and every value of a field in\n"
		       "conflict. Reads the store directly, with or without the server running.\n");
	else
		printf("Usage: shahidi conflicts [--data DIR] [--forms PATH] [--json]\n\n"
		       "Lists the records with open conflicts: for each conflicted field, every\n"
		       "live value with its device and stamp. A conflict stays open until a\n"
		       "change that saw all its values replaces them.\n");
	return 0;
}

static int show_or_conflicts(int argc, char **argv, bool conflicts)
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
		case 'd':
			data = optarg;
			break;
		case 'f':
			forms = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			return show_usage(argv[0]);
		default:
			return EXIT_USAGE;
		}
	}
	uint8_t id[16];
	if (!conflicts && (optind != argc - 1 || uuid_parse(argv[optind], id) < 0)) {
		cli_err("show needs one record id, a UUID (see --help)");
		return EXIT_USAGE;
	}
	struct form_registry *reg = cli_load_forms(forms);
	struct store *s = reg ? cli_open_store(data, true) : NULL;
	struct arena *a = arena_new();
	struct store_txn *t = NULL;
	int rc = 1, r;
	if (!s || !a || (r = store_begin(s, false, &t)) < 0)
		goto out;

	merge_rec_t *rec;
	if (!conflicts) {
		r = store_record_get(t, a, id, &rec);
		if (r == -ENOENT) {
			cli_err("no record %s in %s", argv[optind], data);
			goto out;
		}
		if (r < 0) {
			cli_err("%s", sh_strerror(r));
			goto out;
		}
		const struct form *f = form_registry_find(reg, rec->form_id, rec->form_version);
		if (json) {
			json_t *j = render_record_json(rec, f, false);
			json_dumpf(j, stdout, JSON_INDENT(2));
			putchar('\n');
			json_decref(j);
		} else {
			cli_print_record(rec, f, false);
		}
		rc = 0;
		goto out;
	}

	uint64_t seq = 0, n = 0;
	json_t *arr = json ? json_array() : NULL;
	while ((r = store_conflict_next(t, a, &seq, &rec)) == 1) {
		const struct form *f = form_registry_find(reg, rec->form_id, rec->form_version);
		if (json)
			json_array_append_new(arr, render_record_json(rec, f, false));
		else
			cli_print_record(rec, f, true);
		n++;
		/* One arena per record: a long list runs in constant memory. */
		if (!json)
			arena_reset(a);
	}
	if (json) {
		json_dumpf(arr, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(arr);
	} else {
		printf("%" PRIu64 " record%s with open conflicts\n", n, n == 1 ? "" : "s");
	}
	rc = r < 0 ? 1 : 0;
out:
	store_abort(t);
	store_close(s);
	arena_free(a);
	form_registry_free(reg);
	return rc;
}

int cmd_show(int argc, char **argv)
{
	return show_or_conflicts(argc, argv, false);
}

int cmd_conflicts(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "resolve"))
		return cli_conflicts_resolve(argc - 1, argv + 1);
	return show_or_conflicts(argc, argv, true);
}

/* ---- rebuild ---- */

int cmd_rebuild(int argc, char **argv)
{
	const char *data;
	int rc;
	if (!cli_data_only(argc, argv,
			   "Usage: shahidi rebuild [--data DIR]\n\n"
			   "Merges every record again from the change log, which holds every\n"
			   "change as received, under this release's merge rule, and prints the\n"
			   "records' digest before and after. A store of an older format is\n"
			   "rebuilt by itself the first time a program opens it to write; this\n"
			   "command does it on demand (stop the server first, or let it wait:\n"
			   "each step is its own transaction). Back the store up before.\n",
			   &data, &rc))
		return rc;
	struct store *s = cli_open_store(data, true);
	if (!s)
		return 1;
	store_close(s);
	/* opened read-only first, so that a missing store is not created */
	struct store_opts o = {0};
	char err[512];
	if (store_open(data, &o, &s, err, sizeof(err)) < 0) {
		cli_err("%s", err);
		return 1;
	}
	struct rebuild_report rep;
	int r = rebuild_records(s, &rep);
	store_close(s);
	if (r < 0) {
		cli_err("rebuild failed: %s", sh_strerror(r));
		return 1;
	}
	rebuild_print(stdout, "rebuilt", &rep);
	return 0;
}

