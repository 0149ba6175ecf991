/* shahidi-bench: the in-process figures of the benchmark harness.
 *
 * Measures, in one run on one machine, with durable commits:
 *   - raw LMDB: 1 KB values appended under sequence keys, G batches of B
 *     per transaction: the floor any store design on LMDB pays;
 *   - decode: inflate + unpack + validate of phone batches (one core);
 *   - store: decode + merge + store of the same batches in group commits
 *     (no HTTP), and its ratio to the raw LMDB figure, so the core's own
 *     overhead is visible;
 *   - export (CSV, NDJSON) and pull over the resulting store.
 * With --groups E,A,R the batches are instead shahidi-loadgen's workload
 * with the same option (loadgen_work.c, incident report version 3: creates
 * carrying instances of every repeat group, edits of records and of their
 * instances, perpetrators added to shared records by every device,
 * removals, deletions), so that the figure printed beside PostgreSQL's
 * for HTTP can be split into decode and merge + store here, and profiled.
 * Prints a table, or JSON with --json.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "auth.h"
#include "codec.h"
#include "common.h"
#include "export.h"
#include "form.h"
#include "gen.h"
#include "hlc.h"
#include "loadgen.h"
#include "shahidi.pb-c.h"
#include "store.h"
#include "sync.h"

struct opts {
	unsigned reports;  /* total */
	unsigned batch;    /* reports per batch */
	unsigned group;    /* batches per commit */
	unsigned devices;
	const char *dir;
	bool json;
	bool keep; /* --keep: the directory (and the store in it) stays */
	/* --mix: loadgen's workload (the changes of the half-rate run) on form
	 * version 1; --groups: the same on version 3, with its repeat-group
	 * changes in 1/1000 of changes */
	bool mix, groups;
	unsigned pct_gedit, pct_gadd, pct_gremove;
};

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* Bytes this process has written with write(2) and its kind so far
 * (/proc/self/io's wchar; 0 when it cannot be read): in the store's phase,
 * what its commits wrote, pages written again included. */
static uint64_t written_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	unsigned long long n = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "wchar: %llu", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Removes d and what it holds (nothing outside it: symlinks are removed,
 * not followed). */
static int rm_dir(const char *d)
{
	return nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT ? -1 : 0;
}

/* Phone batches: deflated PushBatch bodies, as they arrive. */
struct corpus {
	struct buf *bodies;
	size_t n;
	size_t raw_bytes, wire_bytes;
	size_t changes;      /* in all the batches */
	/* --groups: bodies[0] is device 0's first batch, which creates the
	 * shared records; they are assigned to every other device after it
	 * (as shahidi-loadgen does once that batch is acknowledged). */
	struct lg_run *run;
};

static int make_corpus(const struct form *f, const struct opts *o, const uint64_t *devs,
		       struct corpus *c)
{
	struct gen_rng rng = {42};
	struct arena *a = arena_new();
	struct hlc clock = {0};
	c->n = o->reports / o->batch;
	c->bodies = calloc(c->n, sizeof(*c->bodies));
	if (!a || !c->bodies)
		return -ENOMEM;
	uint64_t now = sh_now_ms(), seq[4096] = {0}, change[4096] = {0};
	struct buf raw = {0};
	for (size_t i = 0; i < c->n; i++) {
		size_t d = i % o->devices;
		Shahidi__V1__PushBatch pb = SHAHIDI__V1__PUSH_BATCH__INIT;
		Shahidi__V1__Change **ch = arena_alloc(a, o->batch * sizeof(*ch));
		/* Reports are made minutes apart on a phone: their version 7 ids
		 * increase. (All made in the same millisecond, the ids would be
		 * random, as UUIDv4s are, which no phone does.) */
		for (unsigned k = 0; k < o->batch; k++) {
			uint64_t made = now - o->reports + i * o->batch + k;
			ch[k] = gen_report(&rng, a, f, ++change[d], hlc_tick(&clock, made), made);
		}
		pb.device = devs[d];
		pb.batch_seq = ++seq[d];
		pb.app_version = "bench";
		pb.changes = ch;
		pb.n_changes = o->batch;
		buf_reset(&raw);
		buf_reserve(&raw, shahidi__v1__push_batch__get_packed_size(&pb));
		raw.len = shahidi__v1__push_batch__pack(&pb, raw.data);
		c->raw_bytes += raw.len;
		if (codec_deflate(raw.data, raw.len, CODEC_DEFLATE, 6, &c->bodies[i]) < 0)
			return -ENOMEM;
		c->wire_bytes += c->bodies[i].len;
		arena_reset(a);
	}
	buf_free(&raw);
	arena_free(a);
	return 0;
}

/* --groups: shahidi-loadgen's workload, device 0's first batch first, then
 * the devices' batches in turn, as 64 phones pushing at once would be
 * received. The batches are moved into c (run keeps its bookkeeping). */
static int make_mix_corpus(const struct form_registry *reg, const struct opts *o,
			   const uint64_t *devs, struct corpus *c)
{
	struct lg_run *run = calloc(1, sizeof(*run));
	if (!run || !(run->dev = calloc(o->devices, sizeof(*run->dev))))
		return -ENOMEM;
	c->run = run;
	run->o = (struct lg_opts){.devices = o->devices, .batch = o->batch,
				  .changes = o->reports / o->devices, .seed = 1, .shared = 8,
				  .pct_edit = 100, .pct_shared = 30, .pct_delete = 10,
				  .groups = o->groups, .pct_gedit = o->pct_gedit,
				  .pct_gadd = o->pct_gadd, .pct_gremove = o->pct_gremove,
				  .level = 6};
	run->n_dev = o->devices;
	run->form = form_registry_find(reg, "incident_report", o->groups ? 3 : 1);
	if (!run->form || !run->o.changes)
		return -EINVAL;
	for (unsigned i = 0; i < o->devices; i++) {
		run->dev[i].run = run;
		run->dev[i].idx = i;
		run->dev[i].id = devs[i];
		run->dev[i].first_change_id = 1;
		run->dev[i].first_batch_seq = 1;
	}
	int r = lg_work_make(run);
	if (r < 0)
		return r;
	if (!(c->bodies = calloc(run->total_batches, sizeof(*c->bodies))))
		return -ENOMEM;
	c->raw_bytes = run->st.raw_bytes;
	c->wire_bytes = run->st.body_bytes;
	struct lg_batch *first = &run->dev[0].batches[0];
	c->bodies[c->n++] = (struct buf){.data = first->body, .len = first->len, .cap = first->len};
	c->changes += first->n;
	first->body = NULL;
	for (size_t b = 0; c->n < run->total_batches; b++)
		for (unsigned d = 0; d < run->n_dev; d++) {
			struct lg_device *dv = &run->dev[d];
			if (b >= dv->n_batches || !dv->batches[b].body)
				continue;
			c->bodies[c->n++] = (struct buf){.data = dv->batches[b].body,
							 .len = dv->batches[b].len,
							 .cap = dv->batches[b].len};
			c->changes += dv->batches[b].n;
			dv->batches[b].body = NULL;
		}
	return 0;
}

/* Raw LMDB: the same number of ~1 KB values, appended, durable. */
static double bench_raw_lmdb(const struct opts *o, size_t value_len)
{
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/raw", o->dir);
	rm_dir(dir);
	if (mkdir(dir, 0700) < 0)
		return -1;
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *txn;
	mdb_env_create(&env);
	mdb_env_set_mapsize(env, (size_t)8 << 30);
	if (mdb_env_open(env, dir, MDB_NOTLS, 0600))
		return -1;
	uint8_t *val = malloc(value_len);
	memset(val, 'x', value_len);
	uint64_t t0 = sh_mono_ns(), key = 0;
	size_t per_txn = (size_t)o->batch * o->group;
	for (size_t done = 0; done < o->reports;) {
		mdb_txn_begin(env, NULL, 0, &txn);
		mdb_dbi_open(txn, NULL, 0, &dbi);
		for (size_t k = 0; k < per_txn && done < o->reports; k++, done++) {
			uint8_t kb[8];
			sh_put_be64(kb, ++key);
			MDB_val mk = {8, kb}, mv = {value_len, val};
			mdb_put(txn, dbi, &mk, &mv, MDB_APPEND);
		}
		if (mdb_txn_commit(txn))
			return -1;
	}
	double rate = o->reports / secs(sh_mono_ns() - t0);
	mdb_env_close(env);
	free(val);
	rm_dir(dir);
	return rate;
}

struct apply_ctx {
	struct sync_batch **b;
	size_t n;
	bool mix;      /* loadgen's mix: some changes are refused, by design
			  (perpetrators beyond a group's max) */
	uint64_t applied, rejected;
};

static int apply_fn(struct store_txn *t, void *ud)
{
	struct apply_ctx *c = ud;
	uint64_t now = sh_now_ms();
	for (size_t i = 0; i < c->n; i++) {
		struct sync_result res;
		int r = sync_apply(t, c->b[i], now, &res);
		if (r < 0)
			return r;
		if (!c->mix && res.applied != sync_batch_changes(c->b[i]))
			return -EIO;
		if (res.duplicate)
			return -EIO;
		c->applied += res.applied;
		c->rejected += res.rejected;
	}
	return 0;
}

/* Removes the store this run filled, and DIR when this run made it and
 * nothing else is in it; --keep leaves both. */
static void done_with(const struct opts *o, const char *store_dir, bool made)
{
	if (o->keep)
		return;
	rm_dir(store_dir);
	if (made)
		rmdir(o->dir);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"reports", required_argument, 0, 'n'}, {"batch", required_argument, 0, 'b'},
		{"group", required_argument, 0, 'g'},	{"devices", required_argument, 0, 'd'},
		{"dir", required_argument, 0, 'D'},	{"json", no_argument, 0, 'j'},
		{"groups", required_argument, 0, 'G'},	{"mix", no_argument, 0, 'm'},
		{"keep", no_argument, 0, 'k'},	{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	struct opts o = {.reports = 100000, .batch = 100, .group = 16, .devices = 64, .dir = NULL};
	int c;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'n': o.reports = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'b': o.batch = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'g': o.group = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'd': o.devices = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'D': o.dir = optarg; break;
		case 'j': o.json = true; break;
		case 'k': o.keep = true; break;
		case 'G': {
			double g[3];
			if (sscanf(optarg, "%lf,%lf,%lf", &g[0], &g[1], &g[2]) != 3 || g[0] < 0 ||
			    g[1] < 0 || g[2] < 0 || g[0] + g[1] + g[2] > 86) {
				fprintf(stderr, "shahidi-bench: --groups takes EDITS,ADDS,REMOVALS: "
						"three percentages (with loadgen's 14%% of other edits, "
						"at most 86 in all)\n");
				return 2;
			}
			o.groups = o.mix = true;
			o.pct_gedit = (unsigned)(g[0] * 10 + 0.5);
			o.pct_gadd = (unsigned)(g[1] * 10 + 0.5);
			o.pct_gremove = (unsigned)(g[2] * 10 + 0.5);
			break;
		}
		case 'm': o.mix = true; break;
		case 'h':
			printf("Usage: shahidi-bench [--reports N] [--batch B] [--group G] [--devices D]\n"
			       "                     [--mix | --groups E,A,R] [--dir DIR] [--keep]\n"
			       "                     [--json]\n\n"
			       "In-process figures (no HTTP), durable commits, in a scratch directory\n"
			       "(default: a new one under $TMPDIR): raw LMDB appends, decoding, the\n"
			       "store (decode + merge + store in group commits of G batches), its ratio\n"
			       "to raw LMDB, then export and pull over the store it filled.\n"
			       "Defaults: 100000 reports, batches of 100, 16 batches per commit,\n"
			       "64 devices.\n\n"
			       "--groups E,A,R: instead of new v1 reports, N changes of shahidi-loadgen's\n"
			       "workload with the same option (incident report version 3 with repeat\n"
			       "groups; edits 10%%, shared edits 3%%, deletions 1%%, then E%% edits of\n"
			       "instances, A%% perpetrators added to shared records, R%% removals),\n"
			       "decoded and stored; no raw LMDB, export or pull figures.\n"
			       "--mix: the same on version 1 without repeat groups: the changes of\n"
			       "tools/bench's 64 x 100 runs.\n"
			       "--dir DIR: work in DIR (made if missing) instead: the stores go in\n"
			       "DIR/raw and DIR/store (either removed first if there), and are\n"
			       "removed at the end, with DIR if this run made it; --keep leaves\n"
			       "DIR/store for inspection.\n");
			return 0;
		default:
			return 2;
		}
	}
	if (!o.reports || !o.batch || !o.group || !o.devices || o.devices > 4096) {
		fprintf(stderr, "shahidi-bench: bad arguments\n");
		return 2;
	}
	char tmp[4096];
	bool made = true; /* DIR is ours to remove (empty) at the end */
	if (!o.dir) {
		snprintf(tmp, sizeof(tmp), "%s/shahidi-bench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(tmp))
			return 1;
		o.dir = tmp;
	} else if (mkdir(o.dir, 0700) < 0) {
		made = false;
		if (errno != EEXIST) {
			fprintf(stderr, "shahidi-bench: cannot make %s: %s\n", o.dir,
				strerror(errno));
			return 1;
		}
	}
	char err[512], sdir[4200];
	struct form_registry *reg;
	form_registry_new(&reg);
	if (form_registry_add_builtin(reg, err, sizeof(err)) < 0)
		return 1;
	const struct form *f = form_registry_find(reg, "incident_report", 1);
	snprintf(sdir, sizeof(sdir), "%s/store", o.dir);
	rm_dir(sdir);
	struct store *s;
	if (store_open(sdir, NULL, &s, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	uint64_t *devs = calloc(o.devices + 1, sizeof(*devs));
	struct store_txn *t;
	store_begin(s, true, &t);
	for (unsigned i = 0; i < o.devices + 1; i++) {
		char tok[AUTH_TOKEN_LEN + 1];
		struct auth_enrol e = {"bench", "047", ROLE_DEVICE};
		auth_enrol(t, &e, sh_now_ms(), &devs[i], tok, err, sizeof(err));
	}
	store_commit(t);

	fprintf(stderr, "shahidi-bench: making %u reports...\n", o.reports);
	struct corpus corp = {0};
	int mr = o.mix ? make_mix_corpus(reg, &o, devs, &corp) : make_corpus(f, &o, devs, &corp);
	if (mr < 0) {
		fprintf(stderr, "shahidi-bench: cannot make the batches: %s\n", sh_strerror(mr));
		return 1;
	}
	if (!o.mix)
		corp.changes = corp.n * o.batch;
	double nchg = (double)corp.changes;

	/* decode alone, one core, each batch freed as the server frees it */
	struct sync_limits lim;
	sync_limits_default(&lim);
	struct sync_batch **batches = calloc(corp.n, sizeof(*batches));
	uint64_t t0 = sh_mono_ns();
	for (size_t i = 0; i < corp.n; i++) {
		struct form_verdict v;
		if (sync_decode(reg, &lim, corp.bodies[i].data, corp.bodies[i].len, CODEC_DEFLATE,
				sh_now_ms(), &batches[i], &v) < 0)
			return 1;
		sync_batch_free(batches[i]);
	}
	double decode_rate = nchg / secs(sh_mono_ns() - t0);
	/* its parts: inflating, and unpacking with protobuf-c */
	struct buf inflated = {0};
	t0 = sh_mono_ns();
	for (size_t i = 0; i < corp.n; i++) {
		buf_reset(&inflated);
		codec_inflate(corp.bodies[i].data, corp.bodies[i].len, CODEC_DEFLATE, (size_t)32 << 20,
			      &inflated);
	}
	double inflate_rate = nchg / secs(sh_mono_ns() - t0);
	t0 = sh_mono_ns();
	for (size_t i = 0; i < corp.n; i++) {
		buf_reset(&inflated);
		codec_inflate(corp.bodies[i].data, corp.bodies[i].len, CODEC_DEFLATE, (size_t)32 << 20,
			      &inflated);
		Shahidi__V1__PushBatch *pb = shahidi__v1__push_batch__unpack(NULL, inflated.len, inflated.data);
		shahidi__v1__push_batch__free_unpacked(pb, NULL);
	}
	double unpack_rate = nchg / secs(sh_mono_ns() - t0);
	buf_free(&inflated);
	if (getenv("SHAHIDI_BENCH_DECODE_ONLY")) { /* for profiling the decoder */
		printf("decode %.0f /s, inflate %.0f /s, inflate+unpack %.0f /s\n", decode_rate,
		       inflate_rate, unpack_rate);
		return 0;
	}
	/* again, kept for the store's figure (not timed) */
	for (size_t i = 0; i < corp.n; i++) {
		struct form_verdict v;
		if (sync_decode(reg, &lim, corp.bodies[i].data, corp.bodies[i].len, CODEC_DEFLATE,
				sh_now_ms(), &batches[i], &v) < 0)
			return 1;
	}

	/* the store: apply in group commits (--groups: the batch that creates
	 * the shared records alone first, then their assignment, untimed) */
	size_t from = 0;
	uint64_t applied = 0, rejected = 0;
	if (o.mix) {
		struct apply_ctx ac = {batches, 1, true, 0, 0};
		int r = store_write(s, apply_fn, &ac);
		if (r >= 0)
			r = store_write(s, lg_assign_txn, corp.run);
		if (r < 0) {
			fprintf(stderr, "apply: %s\n", sh_strerror(r));
			return 1;
		}
		applied += ac.applied;
		rejected += ac.rejected;
		from = 1;
	}
	t0 = sh_mono_ns();
	uint64_t w0 = written_bytes();
	for (size_t i = from; i < corp.n; i += o.group) {
		struct apply_ctx ac = {batches + i, SH_MIN((size_t)o.group, corp.n - i), o.mix, 0, 0};
		int r = store_write(s, apply_fn, &ac);
		if (r < 0) {
			fprintf(stderr, "apply: %s\n", sh_strerror(r));
			return 1;
		}
		applied += ac.applied;
		rejected += ac.rejected;
	}
	double timed = nchg - (from ? (double)sync_batch_changes(batches[0]) : 0);
	double store_rate = timed / secs(sh_mono_ns() - t0);
	double written = (double)(written_bytes() - w0) / timed;
	for (size_t i = 0; i < corp.n; i++)
		sync_batch_free(batches[i]);
	free(batches);
	if (o.mix) {
		double per = (double)corp.raw_bytes / nchg, wire = (double)corp.wire_bytes / nchg;
		if (o.json)
			printf("{\"changes\":%zu,\"batch\":%u,\"group\":%u,\"devices\":%u,"
			       "\"groups\":[%.1f,%.1f,%.1f],\"change_bytes\":%.0f,"
			       "\"deflated_bytes\":%.0f,\"decode_per_s\":%.0f,"
			       "\"inflate_per_s\":%.0f,\"inflate_unpack_per_s\":%.0f,"
			       "\"store_per_s\":%.0f,\"written_bytes_per_change\":%.0f,"
			       "\"applied\":%" PRIu64 ",\"rejected\":%" PRIu64 "}\n",
			       corp.changes, o.batch, o.group, o.devices, o.pct_gedit / 10.0,
			       o.pct_gadd / 10.0, o.pct_gremove / 10.0, per, wire, decode_rate,
			       inflate_rate, unpack_rate, store_rate, written, applied, rejected);
		else {
			printf("in-process, %zu changes of loadgen's mix%s (%.0f bytes, %.0f "
			       "deflated), batches of %u, %u per commit\n",
			       corp.changes, o.groups ? " with groups" : "", per, wire, o.batch,
			       o.group);
			printf("  %-36s %10.0f /s (one core)\n", "decode: inflate+unpack+validate",
			       decode_rate);
			printf("  %-36s %10.0f /s\n", "  of which inflate alone", inflate_rate);
			printf("  %-36s %10.0f /s\n", "  inflate + protobuf-c unpack", unpack_rate);
			printf("  %-36s %10.0f /s\n", "store: merge+store, durable", store_rate);
			printf("  %-36s %10.0f B a change\n", "  written by its commits", written);
			printf("  %-36s %10" PRIu64 " applied, %" PRIu64 " refused\n", "changes",
			       applied, rejected);
		}
		store_close(s);
		form_registry_free(reg);
		for (size_t i = 0; i < corp.n; i++)
			buf_free(&corp.bodies[i]);
		free(corp.bodies);
		lg_work_free(corp.run);
		free(corp.run->dev);
		free(corp.run);
		free(devs);
		done_with(&o, sdir, made);
		return 0;
	}
	double raw_rate = bench_raw_lmdb(&o, corp.raw_bytes / o.reports);

	/* export */
	double exp_rate[2];
	for (int fmt = 0; fmt < 2; fmt++) {
		struct export_opts eo = {.format = fmt ? EXPORT_NDJSON : EXPORT_CSV};
		struct exporter *x;
		struct buf b = {0};
		export_new(reg, &eo, &x, err, sizeof(err));
		uint64_t cursor = 0;
		bool end = false;
		t0 = sh_mono_ns();
		while (!end) {
			buf_reset(&b);
			if (export_page(x, s, &cursor, 10000, &b, &end) < 0)
				return 1;
		}
		exp_rate[fmt] = export_written(x) / secs(sh_mono_ns() - t0);
		export_free(x);
		buf_free(&b);
	}

	/* pull: a reader device assigned every record pulls it all */
	uint64_t reader = devs[o.devices];
	struct arena *a = arena_new();
	uint64_t seq = 0;
	merge_rec_t *rec;
	size_t n_assigned = 0;
	for (bool end = false; !end;) {
		int r = store_begin(s, true, &t);
		for (int k = 0; k < 5000 && r >= 0; k++) {
			arena_reset(a);
			r = store_record_next(t, a, &seq, &rec);
			if (r <= 0) {
				end = true;
				break;
			}
			r = store_assign(t, a, rec->record_id.data, reader);
			n_assigned++;
		}
		if (r < 0 || (r = store_commit(t)) < 0) {
			fprintf(stderr, "shahidi-bench: assigning the records failed: %s\n",
				sh_strerror(r));
			return 1;
		}
	}
	struct buf out = {0};
	uint64_t cursor = 0, pulled = 0;
	struct sync_pull_info info = {.more = true};
	t0 = sh_mono_ns();
	while (info.more || pulled == 0) {
		buf_reset(&out);
		store_begin(s, false, &t);
		int r = sync_pull(t, reader, cursor, 1000, SYNC_PULL_PAGE_BYTES, &out, &info);
		store_abort(t);
		if (r < 0 || info.changes == 0)
			break;
		cursor = info.next_cursor;
		pulled += info.changes;
	}
	double pull_rate = pulled / secs(sh_mono_ns() - t0);
	buf_free(&out);
	arena_free(a);

	struct store_info si;
	store_begin(s, false, &t);
	store_info(t, &si);
	store_abort(t);
	double per_report = (double)corp.raw_bytes / o.reports;
	double wire = (double)corp.wire_bytes / o.reports;
	if (o.json) {
		printf("{\"reports\":%u,\"batch\":%u,\"group\":%u,\"devices\":%u,"
		       "\"report_bytes\":%.0f,\"deflated_bytes\":%.0f,"
		       "\"raw_lmdb_per_s\":%.0f,\"decode_per_s\":%.0f,\"inflate_per_s\":%.0f,\"inflate_unpack_per_s\":%.0f,\"store_per_s\":%.0f,"
		       "\"store_vs_raw_lmdb\":%.3f,\"export_csv_per_s\":%.0f,\"export_ndjson_per_s\":%.0f,"
		       "\"pull_per_s\":%.0f,\"pulled\":%" PRIu64 ",\"store_bytes\":%" PRIu64 ","
		       "\"written_bytes_per_change\":%.0f}\n",
		       o.reports, o.batch, o.group, o.devices, per_report, wire, raw_rate, decode_rate,
		       inflate_rate, unpack_rate,
		       store_rate, store_rate / raw_rate, exp_rate[0], exp_rate[1], pull_rate, pulled,
		       si.file_size, written);
	} else {
		printf("in-process, %u reports of %.0f bytes (%.0f deflated), batches of %u, %u per commit\n",
		       o.reports, per_report, wire, o.batch, o.group);
		printf("  %-36s %10.0f /s\n", "raw LMDB append, durable", raw_rate);
		printf("  %-36s %10.0f /s (one core)\n", "decode: inflate+unpack+validate", decode_rate);
		printf("  %-36s %10.0f /s\n", "  of which inflate alone", inflate_rate);
		printf("  %-36s %10.0f /s\n", "  inflate + protobuf-c unpack", unpack_rate);
		printf("  %-36s %10.0f /s  = %.2f x raw LMDB\n", "store: merge+store, durable", store_rate,
		       store_rate / raw_rate);
		printf("  %-36s %10.0f B a report\n", "  written by its commits", written);
		printf("  %-36s %10.0f /s\n", "export CSV", exp_rate[0]);
		printf("  %-36s %10.0f /s\n", "export NDJSON", exp_rate[1]);
		printf("  %-36s %10.0f /s (%" PRIu64 " changes)\n", "pull", pull_rate, pulled);
		printf("  %-36s %10.1f MB\n", "store size", (double)si.file_size / 1e6);
	}
	store_close(s);
	form_registry_free(reg);
	for (size_t i = 0; i < corp.n; i++)
		buf_free(&corp.bodies[i]);
	free(corp.bodies);
	free(devs);
	done_with(&o, sdir, made);
	return 0;
}
