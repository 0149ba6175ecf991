/* The store through its real LMDB environment in a temporary directory:
 * opening, the format check, map growth, the hash chain, deduplication,
 * clock skew, devices and tokens, pull feeds. */
#include <lmdb.h>
#include <sys/stat.h>

#include "apply.h"
#include "auth.h"
#include "check.h"
#include "common.h"
#include "gen.h"
#include "hlc.h"
#include "merge.h"
#include "rebuild.h"
#include "recpack.h"
#include "shahidi.pb-c.h"
#include "testutil.h"
#include "uuid.h"
#include "zchange.h"
#include "store.pb-c.h"

static struct form_registry *FORMS;

/* Opens the environment with LMDB itself, to play an attacker or an older
 * or newer release. */
static void raw_put(const char *dir, const char *db, const void *k, size_t klen, const void *v,
		    size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 32) == 0);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, db, 0, &dbi) == 0);
	MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
	if (v)
		CHECK(mdb_put(txn, dbi, &key, &val, 0) == 0);
	else
		CHECK(mdb_del(txn, dbi, &key, NULL) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

/* Drops table db of the store in dir, as a store from before it lacks it. */
static void raw_drop(const char *dir, const char *db)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 32) == 0);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, db, 0, &dbi) == 0);
	CHECK(mdb_drop(txn, dbi, 1) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

/* Entries in table db of the store in dir. */
static size_t raw_count(const char *dir, const char *db)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_stat st;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 32) == 0);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
	CHECK(mdb_dbi_open(txn, db, 0, &dbi) == 0);
	CHECK(mdb_stat(txn, dbi, &st) == 0);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return st.ms_entries;
}

/* The value of key k in table db of the store in dir, as LMDB holds it:
 * *ret malloc'd. */
static void raw_get(const char *dir, const char *db, const void *k, size_t klen, uint8_t **ret,
		    size_t *ret_len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = {klen, (void *)k}, val;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 32) == 0);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
	CHECK(mdb_dbi_open(txn, db, 0, &dbi) == 0);
	CHECK(mdb_get(txn, dbi, &key, &val) == 0);
	*ret = malloc(val.mv_size + 1);
	CHECK(*ret != NULL);
	memcpy(*ret, val.mv_data, val.mv_size);
	*ret_len = val.mv_size;
	mdb_txn_abort(txn);
	mdb_env_close(env);
}

/* The format version stored in dir, as text. */
static void raw_format(const char *dir, char out[16])
{
	uint8_t *v;
	size_t n;
	raw_get(dir, "meta", "format", 6, &v, &n);
	CHECK(n < 16);
	memcpy(out, v, n);
	out[n] = 0;
	free(v);
}

/* Log entry seq of the store in dir, as LMDB holds it: *ret malloc'd. */
static void raw_log(const char *dir, uint64_t seq, uint8_t **ret, size_t *ret_len)
{
	uint8_t k[8];
	sh_put_be64(k, seq);
	raw_get(dir, "log", k, 8, ret, ret_len);
}

/* Entries of db whose key starts with be64 prefix. */
static size_t raw_count_prefix(const char *dir, const char *db, uint64_t prefix)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *c;
	uint8_t kb[8];
	size_t n = 0;
	sh_put_be64(kb, prefix);
	MDB_val k = {8, kb}, v;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 32) == 0);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
	CHECK(mdb_dbi_open(txn, db, 0, &dbi) == 0);
	CHECK(mdb_cursor_open(txn, dbi, &c) == 0);
	int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= 8 && !memcmp(k.mv_data, kb, 8)) {
		n++;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

static void test_open_creates_private_store(void)
{
	char dir[256], sub[300], path[400];
	struct stat st;
	tu_tmpdir(dir);
	snprintf(sub, sizeof(sub), "%s/data", dir);
	struct store *s = tu_store_open(sub, NULL);
	CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700);
	snprintf(path, sizeof(path), "%s/data.mdb", sub);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	store_close(s);
	/* a directory made too open is made private again */
	CHECK(chmod(sub, 0755) == 0);
	s = tu_store_open(sub, NULL);
	CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700);
	store_close(s);
	tu_rmrf(dir);
}

static void test_format_version_is_checked(void)
{
	char dir[256], err[512];
	struct store *s;
	tu_tmpdir(dir);
	store_close(tu_store_open(dir, NULL));

	char fmt[16];
	raw_format(dir, fmt);
	CHECK(!strcmp(fmt, "8"));
	raw_put(dir, "meta", "format", 6, "9", 1);
	CHECK(store_open(dir, NULL, &s, err, sizeof(err)) == -ENOTSUP);
	CHECK(strstr(err, "format '9'") && strstr(err, "Refusing"));
	raw_put(dir, "meta", "format", 6, "x1", 2);
	CHECK(store_open(dir, NULL, &s, err, sizeof(err)) == -ENOTSUP);
	/* read-only tools refuse it the same way */
	struct store_opts ro = {.read_only = true};
	CHECK(store_open(dir, &ro, &s, err, sizeof(err)) == -ENOTSUP);
	/* and it was never "repaired" */
	CHECK(store_open(dir, NULL, &s, err, sizeof(err)) == -ENOTSUP);
	raw_put(dir, "meta", "format", 6, "0", 1);
	CHECK(store_open(dir, NULL, &s, err, sizeof(err)) == -ENOTSUP);
	/* formats 1 (no pointer records), 2 (a feed item per entry), 3
	 * (stamps brought back for skew), 4 (no pointer records with
	 * instances), 5 (no wide table), 6 (no compressed changes) and 7
	 * (edited records written in full) are read as they are, and marked 8
	 * by the first program that opens them to write (which rebuilds the
	 * records of 1 to 3: rebuild.h) */
	static const char *const olds[] = {"1", "2", "3", "4", "5", "6", "7"};
	for (size_t i = 0; i < 7; i++) {
		const char *old = olds[i];
		raw_put(dir, "meta", "format", 6, old, 1);
		store_close(tu_store_open(dir, &ro));
		raw_format(dir, fmt);
		CHECK(!strcmp(fmt, old));
		s = tu_store_open(dir, NULL);
		CHECK_EQ_INT(store_opened_format(s), (long long)(old[0] - '0'));
		store_close(s);
		raw_format(dir, fmt);
		CHECK(!strcmp(fmt, "8"));
	}

	/* a directory that is not a store is refused by the read-only tools */
	char empty[256];
	tu_tmpdir(empty);
	CHECK(store_open(empty, &ro, &s, err, sizeof(err)) < 0);
	tu_rmrf(empty);
	tu_rmrf(dir);
}

static void push_reports(struct store *s, uint64_t dev, uint64_t batch, unsigned n,
			 uint64_t first_change, int expect)
{
	struct arena *a = arena_new();
	Shahidi__V1__Change **ch = arena_alloc(a, n * sizeof(*ch));
	uint64_t hlc = tu_now_hlc();
	for (unsigned i = 0; i < n; i++)
		ch[i] = tu_report(a, FORMS, first_change + i, first_change + i, hlc + i);
	struct buf body = {0};
	tu_batch(&body, dev, batch, ch, n, CODEC_DEFLATE);
	CHECK_EQ_INT(tu_push(s, FORMS, &body, NULL, NULL), expect);
	buf_free(&body);
	arena_free(a);
}

static void test_map_grows_and_stops_at_its_cap(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store_opts o = {.map_size = 1 << 20, .max_map_size = 64 << 20};
	struct store *s = tu_store_open(dir, &o);
	uint64_t dev = tu_enrol(s, "phone", "047", ROLE_DEVICE, NULL);
	for (unsigned b = 0; b < 6; b++)
		push_reports(s, dev, b + 1, 500, 1 + b * 500, 0);
	struct store_txn *t;
	struct store_info info;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_info(t, &info) == 0);
	store_abort(t);
	CHECK_EQ_INT(info.records, 3000);
	CHECK(info.map_size > (1 << 20)); /* it grew, and nothing was lost */
	store_close(s);

	/* With a cap, a batch that does not fit is refused whole, the store
	 * stays usable and holds exactly what was acknowledged. */
	struct store_opts capped = {.map_size = 1 << 20, .max_map_size = 2 << 20};
	char dir2[256];
	tu_tmpdir(dir2);
	s = tu_store_open(dir2, &capped);
	dev = tu_enrol(s, "phone", "047", ROLE_DEVICE, NULL);
	int r = 0;
	unsigned acked = 0;
	for (unsigned b = 0; b < 40 && r == 0; b++) {
		struct arena *a = arena_new();
		Shahidi__V1__Change *ch[100];
		for (unsigned i = 0; i < 100; i++)
			ch[i] = tu_report(a, FORMS, b * 100 + i + 1, b * 100 + i + 1, tu_now_hlc() + i);
		struct buf body = {0};
		tu_batch(&body, dev, b + 1, ch, 100, CODEC_DEFLATE);
		r = tu_push(s, FORMS, &body, NULL, NULL);
		if (r == 0)
			acked += 100;
		buf_free(&body);
		arena_free(a);
	}
	CHECK_EQ_INT(r, -ENOSPC);
	CHECK(acked > 0);
	struct tu_state st;
	tu_state(s, &st);
	CHECK_EQ_INT(st.n_records, acked);
	CHECK_EQ_INT(st.log_entries, acked);
	store_close(s);
	CHECK_EQ_INT(store_verify_chain(s = tu_store_open(dir2, &capped), NULL, NULL), 0);
	store_close(s);
	tu_rmrf(dir);
	tu_rmrf(dir2);
}

/* Format 7: a change is kept in the log as a zstd frame when that is
 * smaller, and read back as received, byte for byte; a frame that does not
 * decode is corruption, named by seq; what does not shrink stays raw. */
static void test_log_keeps_changes_compressed(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint64_t dev = tu_enrol(s, "phone", "047", ROLE_DEVICE, NULL);
	struct arena *a = arena_new();
	Shahidi__V1__Change *ch[3];
	uint64_t hlc = tu_now_hlc();
	for (unsigned i = 0; i < 3; i++)
		ch[i] = tu_report(a, FORMS, 1 + i, 1 + i, hlc + i);
	/* report 2 with a survivor's long account: a change over ZCHANGE_FROM */
	static const char line[] = "They came at night and took him to the station. ";
	char *story = arena_alloc(a, 4001);
	for (size_t i = 0; i < 4000; i++)
		story[i] = line[i % (sizeof(line) - 1)];
	story[4000] = 0;
	bool set = false;
	for (size_t i = 0; i < ch[1]->n_fields; i++)
		if (ch[1]->fields[i]->field == 62 && (set = true)) /* narrative */
			ch[1]->fields[i]->value = tu_text(a, story);
	if (!set)
		tu_set(a, ch[1], 62, tu_text(a, story), 0, NULL);
	CHECK(shahidi__v1__change__get_packed_size(ch[1]) >= ZCHANGE_FROM);
	CHECK(shahidi__v1__change__get_packed_size(ch[0]) < ZCHANGE_FROM);
	struct buf body = {0};
	tu_batch(&body, dev, 1, ch, 3, CODEC_DEFLATE);
	CHECK_EQ_INT(tu_push(s, FORMS, &body, NULL, NULL), 0);
	buf_free(&body);

	struct store_txn *t;
	CHECK(store_begin(s, false, &t) == 0);
	for (unsigned i = 0; i < 3; i++) {
		size_t n = shahidi__v1__change__get_packed_size(ch[i]);
		uint8_t *want = arena_alloc(a, n);
		shahidi__v1__change__pack(ch[i], want);
		store_log_t *e;
		CHECK(store_log_get(t, a, 1 + i, &e) == 0);
		CHECK(e->change.len == n && !memcmp(e->change.data, want, n));
		CHECK_EQ_INT(e->change_zstd.len, 0);
		const uint8_t *got;
		size_t got_len;
		uint64_t pusher;
		CHECK(store_log_change(t, a, 1 + i, &got, &got_len, &pusher) == 0);
		CHECK(got_len == n && !memcmp(got, want, n) && pusher == dev);
	}
	store_abort(t);
	store_close(s);

	/* on disk: the long one as field 11, no field 3, and smaller; the
	 * short one as it came */
	uint8_t *v;
	size_t v_len;
	raw_log(dir, 1, &v, &v_len);
	store_log_t *e = shahidi__store__v1__log_entry__unpack(NULL, v_len, v);
	CHECK(e != NULL);
	CHECK(e->change.len == shahidi__v1__change__get_packed_size(ch[0]) &&
	      e->change_zstd.len == 0);
	shahidi__store__v1__log_entry__free_unpacked(e, NULL);
	free(v);
	raw_log(dir, 2, &v, &v_len);
	e = shahidi__store__v1__log_entry__unpack(NULL, v_len, v);
	CHECK(e != NULL);
	size_t n2 = shahidi__v1__change__get_packed_size(ch[1]);
	CHECK(e->change.len == 0 && e->change_zstd.len > 0 && e->change_zstd.len < n2 / 2);

	/* a frame cut short: store_log_get and store_log_change say so, and
	 * verify names the entry */
	e->change_zstd.len--;
	size_t n = shahidi__store__v1__log_entry__get_packed_size(e);
	uint8_t *p = malloc(n), key[8];
	shahidi__store__v1__log_entry__pack(e, p);
	sh_put_be64(key, 2);
	raw_put(dir, "log", key, 8, p, n);
	s = tu_store_open(dir, NULL);
	CHECK(store_begin(s, false, &t) == 0);
	store_log_t *bad;
	const uint8_t *got;
	size_t got_len;
	uint64_t pusher;
	CHECK_EQ_INT(store_log_get(t, a, 2, &bad), -EBADMSG);
	CHECK_EQ_INT(store_log_change(t, a, 2, &got, &got_len, &pusher), -EBADMSG);
	CHECK(store_log_get(t, a, 3, &bad) == 0); /* its neighbours read */
	store_abort(t);
	CHECK_EQ_INT(store_verify_chain(s, NULL, NULL), 2);
	store_close(s);
	shahidi__store__v1__log_entry__free_unpacked(e, NULL);
	free(v);
	free(p);

	/* bytes that do not shrink by a margin are kept as they are, and short
	 * ones are not tried; a frame too short to be one is refused */
	uint8_t noise[ZCHANGE_FROM];
	uint64_t x = 0x9E3779B97F4A7C15u; /* xorshift: bytes without pattern */
	for (size_t i = 0; i < sizeof(noise); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		noise[i] = (uint8_t)(x >> 32);
	}
	const uint8_t *z;
	size_t z_len;
	CHECK(zchange_pack(a, noise, sizeof(noise), &z, &z_len) == 0 && !z && !z_len);
	CHECK(zchange_pack(a, (const uint8_t *)story, ZCHANGE_FROM - 1, &z, &z_len) == 0 && !z);
	CHECK(zchange_pack(a, (const uint8_t *)story, ZCHANGE_FROM, &z, &z_len) == 0 && z);
	CHECK_EQ_INT(zchange_unpack(a, noise, 3, &z, &z_len), -EBADMSG);
	arena_free(a);
	tu_rmrf(dir);
}

static void test_hash_chain_detects_tampering(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint64_t dev = tu_enrol(s, "phone", "047", ROLE_DEVICE, NULL);
	push_reports(s, dev, 1, 5, 1, 0);
	CHECK_EQ_INT(store_verify_chain(s, NULL, NULL), 0);

	/* Rewrite entry 3 as an insider with file access would: new content,
	 * old hash. */
	struct store_txn *t;
	struct arena *a = arena_new();
	store_log_t *e;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_log_get(t, a, 3, &e) == 0);
	store_abort(t);
	e->received_ms += 1000;
	size_t n = shahidi__store__v1__log_entry__get_packed_size(e);
	uint8_t *p = malloc(n), key[8];
	shahidi__store__v1__log_entry__pack(e, p);
	store_close(s);
	sh_put_be64(key, 3);
	raw_put(dir, "log", key, 8, p, n);
	s = tu_store_open(dir, NULL);
	CHECK_EQ_INT(store_verify_chain(s, NULL, NULL), 3);
	store_close(s);

	/* Removing the newest entry is caught too (the head no longer matches). */
	char dir2[256];
	tu_tmpdir(dir2);
	s = tu_store_open(dir2, NULL);
	dev = tu_enrol(s, "phone", "047", ROLE_DEVICE, NULL);
	push_reports(s, dev, 1, 4, 1, 0);
	store_close(s);
	sh_put_be64(key, 4);
	raw_put(dir2, "log", key, 8, NULL, 0);
	s = tu_store_open(dir2, NULL);
	CHECK_EQ_INT(store_verify_chain(s, NULL, NULL), 4);
	store_close(s);
	free(p);
	arena_free(a);
	tu_rmrf(dir);
	tu_rmrf(dir2);
}

static void test_batches_and_changes_are_deduplicated(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint64_t dev = tu_enrol(s, "phone", "047", ROLE_DEVICE, NULL);
	struct arena *a = arena_new();
	Shahidi__V1__Change *ch[3];
	uint64_t hlc = tu_now_hlc();
	for (int i = 0; i < 3; i++)
		ch[i] = tu_report(a, FORMS, 10 + (uint64_t)i, (uint64_t)i + 1, hlc + (uint64_t)i);
	struct buf body = {0};
	Shahidi__V1__PushResponse *r1, *r2;
	tu_batch(&body, dev, 1, ch, 3, CODEC_GZIP);
	CHECK(tu_push(s, FORMS, &body, &r1, NULL) == 0);
	struct tu_state before, after;
	tu_state(s, &before);

	/* The same batch five times over a dying link: the same answers,
	 * nothing stored twice. */
	for (int k = 0; k < 5; k++) {
		CHECK(tu_push(s, FORMS, &body, &r2, NULL) == 0);
		CHECK_EQ_INT(r2->n_results, 3);
		/* the first answer is the memo's bytes with the clock and
		 * cursor appended; a replay packs them all: one message */
		CHECK_EQ_INT(r1->batch_seq, 1);
		CHECK_EQ_INT(r2->batch_seq, 1);
		CHECK(r1->server_hlc != 0 && r2->server_hlc > r1->server_hlc);
		CHECK_EQ_INT(r2->pull_cursor, r1->pull_cursor);
		for (int i = 0; i < 3; i++) {
			CHECK_EQ_INT(r2->results[i]->change_id, r1->results[i]->change_id);
			CHECK_EQ_INT(r2->results[i]->status, r1->results[i]->status);
			CHECK_EQ_INT(r2->results[i]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
		}
		shahidi__v1__push_response__free_unpacked(r2, NULL);
	}
	tu_state(s, &after);
	CHECK(tu_state_eq(&before, &after));

	/* The same batch number with other content: refused, nothing changed. */
	tu_batch(&body, dev, 1, ch, 2, CODEC_GZIP);
	CHECK_EQ_INT(tu_push(s, FORMS, &body, NULL, NULL), -EEXIST);
	tu_state(s, &after);
	CHECK(tu_state_eq(&before, &after));

	/* A change sent again in a new batch: "already had it". */
	tu_batch(&body, dev, 2, ch + 1, 1, CODEC_IDENTITY);
	CHECK(tu_push(s, FORMS, &body, &r2, NULL) == 0);
	CHECK_EQ_INT(r2->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__DUPLICATE);
	shahidi__v1__push_response__free_unpacked(r2, NULL);
	tu_state(s, &after);
	CHECK_EQ_INT(after.log_entries, before.log_entries);

	/* A change id reused for other content is refused. */
	Shahidi__V1__Change *other = tu_report(a, FORMS, 99, 2, hlc + 50);
	tu_batch(&body, dev, 3, &other, 1, CODEC_IDENTITY);
	CHECK(tu_push(s, FORMS, &body, &r2, NULL) == 0);
	CHECK_EQ_INT(r2->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED);
	CHECK_EQ_STR(r2->results[0]->code, "change_id_reused");
	shahidi__v1__push_response__free_unpacked(r2, NULL);
	tu_state(s, &after);
	CHECK_EQ_INT(after.log_entries, before.log_entries);
	CHECK(!memcmp(after.records, before.records, 32));

	shahidi__v1__push_response__free_unpacked(r1, NULL);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* A phone days ahead keeps its stamps (nothing is rewritten, so every
 * server and every order agree); it wins nothing over edits that saw its
 * values, and it does not drag the server's clock. */
static void test_clock_ahead_keeps_its_stamps(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store_opts o = {.max_skew_ms = 60000};
	struct store *s = tu_store_open(dir, &o);
	uint64_t a_dev = tu_enrol(s, "fast phone", "047", ROLE_DEVICE, NULL);
	uint64_t b_dev = tu_enrol(s, "good phone", "047", ROLE_DEVICE, NULL);
	struct arena *a = arena_new();
	uint64_t now = tu_now_hlc();
	uint64_t future = hlc_make(hlc_ms(now) + 3ull * 86400000, 0); /* 3 days ahead */
	Shahidi__V1__Change *c = tu_report(a, FORMS, 1, 1, future);
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	tu_batch(&body, a_dev, 1, &c, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->stored_hlc, 0);
	CHECK(hlc_ms(resp->server_hlc) <= sh_now_ms() + 1000); /* not dragged */
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	tu_assign(s, c->record_id.data, b_dev);

	/* Another phone, with a right clock, edits the risk level having seen
	 * the fast phone's value: its edit wins, although the fast phone's
	 * stamp is "newer". */
	uint64_t seen[2] = {future, a_dev};
	Shahidi__V1__Change *e = tu_change(a, c->record_id.data, 1, tu_now_hlc() + 10);
	tu_set(a, e, 140, tu_choice(a, "urgent"), 1, seen);
	tu_batch(&body, b_dev, 1, &e, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	shahidi__v1__push_response__free_unpacked(resp, NULL);

	/* The fast phone edits again, naming its own stamp. */
	uint64_t own[2] = {future, a_dev};
	Shahidi__V1__Change *e2 = tu_change(a, c->record_id.data, 2, future + 5);
	tu_set(a, e2, 142, tu_text(a, "Wanjiru"), 1, own);
	tu_batch(&body, a_dev, 2, &e2, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->stored_hlc, 0);
	shahidi__v1__push_response__free_unpacked(resp, NULL);

	struct store_txn *t;
	merge_rec_t *rec;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_record_get(t, a, c->record_id.data, &rec) == 0);
	const merge_entry_t *risk = merge_current(merge_register(rec, 140));
	CHECK(risk && risk->device == b_dev);
	const merge_entry_t *name = merge_current(merge_register(rec, 142));
	CHECK(name && name->hlc == future + 5); /* as sent */
	CHECK_EQ_INT(merge_live_count(merge_register(rec, 142)), 1);
	CHECK_EQ_INT(rec->conflicts, 0);
	struct store_info info;
	CHECK(store_info(t, &info) == 0 && hlc_ms(info.hlc) <= sh_now_ms() + 1000);
	store_log_t *le;
	CHECK(store_log_get(t, a, 1, &le) == 0);
	CHECK_EQ_INT(le->stored_hlc, 0);
	store_abort(t);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

static void test_tokens_and_revocation(void)
{
	char dir[256], tok[AUTH_TOKEN_LEN + 1];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint64_t id = tu_enrol(s, "phone", "012", ROLE_DEVICE, tok);
	CHECK(strlen(tok) == AUTH_TOKEN_LEN && !strncmp(tok, "shd_", 4));
	struct arena *a = arena_new();
	struct store_txn *t;
	store_device_t *d;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(auth_check(t, a, tok, strlen(tok), &d) == 0 && d->id == id);
	CHECK_EQ_STR(d->county, "012");
	/* only the hash is stored */
	CHECK(d->token_hash.len == 32 && memcmp(d->token_hash.data, tok + 4, 32));
	char wrong[AUTH_TOKEN_LEN + 1];
	memcpy(wrong, tok, sizeof(wrong));
	wrong[10] ^= 1;
	CHECK_EQ_INT(auth_check(t, a, wrong, strlen(wrong), &d), -EACCES);
	CHECK_EQ_INT(auth_check(t, a, "", 0, &d), -EACCES);
	CHECK_EQ_INT(auth_check(t, a, tok, strlen(tok) - 1, &d), -EACCES);
	store_abort(t);

	struct store_txn *w;
	CHECK(store_begin(s, true, &w) == 0);
	CHECK(auth_revoke(w, id, sh_now_ms()) == 0);
	CHECK_EQ_INT(auth_revoke(w, 12345, sh_now_ms()), -ENOENT);
	CHECK(store_commit(w) == 0);
	CHECK(store_begin(s, false, &t) == 0);
	CHECK_EQ_INT(auth_check(t, a, tok, strlen(tok), &d), -EACCES);
	CHECK(store_device_get(t, a, id, &d) == 0 && d->revoked);
	store_abort(t);

	/* enrolment refuses bad arguments */
	struct auth_enrol bad[] = {
		{"", "047", ROLE_DEVICE}, {"x", "048", ROLE_DEVICE}, {"x", "47", ROLE_DEVICE},
		{"x", NULL, ROLE_DEVICE}, {"x", "001", 9},
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(bad); i++) {
		char err[128] = "";
		uint64_t nid;
		CHECK(store_begin(s, true, &w) == 0);
		CHECK_EQ_INT(auth_enrol(w, &bad[i], 0, &nid, tok, err, sizeof(err)), -EINVAL);
		CHECK(err[0]);
		store_abort(w);
	}
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* A new store in dir with phones A and B enrolled. */
static struct store *open_with_phones(char dir[256], uint64_t *pa, uint64_t *pb)
{
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	*pa = tu_enrol(s, "A", "047", ROLE_DEVICE, NULL);
	*pb = tu_enrol(s, "B", "047", ROLE_DEVICE, NULL);
	return s;
}

/* Phone pa pushes a report (change 1, stamped hlc), phone pb an edit of
 * it that saw it: the report, allocated in a. */
static Shahidi__V1__Change *report_edited_by(struct store *s, struct arena *a, uint64_t pa,
					     uint64_t pb, uint64_t seed, uint64_t hlc)
{
	Shahidi__V1__Change *c = tu_report(a, FORMS, seed, 1, hlc);
	struct buf body = {0};
	tu_batch(&body, pa, 1, &c, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	/* B holds the record (a phone may change only what it holds) */
	tu_assign(s, c->record_id.data, pb);
	uint64_t seen[2] = {hlc, pa};
	Shahidi__V1__Change *e = tu_change(a, c->record_id.data, 1, hlc + 100);
	tu_set(a, e, 140, tu_choice(a, "high"), 1, seen);
	tu_batch(&body, pb, 1, &e, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	buf_free(&body);
	return c;
}

/* Format 8: an edited report keeps its first change's registers in the
 * log. Phone A's report, edited by B (field 140): the record stores that
 * register alone and names A's change (base_log_seq, its origin and id);
 * read back, it is the two changes merged, as a record written in full
 * would be. A record naming another change than its first is refused as
 * corruption (-EIO), not read as a mix of both. */
static void test_edited_record_keeps_its_first_change_in_the_log(void)
{
	char dir[256];
	uint64_t pa, pb;
	struct store *s = open_with_phones(dir, &pa, &pb);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	Shahidi__V1__Change *c = report_edited_by(s, a, pa, pb, 21, hlc);
	Shahidi__V1__Change *other = tu_report(a, FORMS, 22, 2, hlc + 1);
	struct buf body = {0};
	tu_batch(&body, pa, 2, &other, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	buf_free(&body);

	struct store_txn *t;
	merge_rec_t *rec;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_record_get(t, a, c->record_id.data, &rec) == 0);
	CHECK_EQ_INT(rec->changes, 2);
	bool had = false; /* whether A's report set field 140 */
	for (size_t i = 0; i < c->n_fields; i++)
		had |= c->fields[i]->field == 140;
	CHECK_EQ_INT(rec->n_registers, c->n_fields + !had);
	const merge_reg_t *g = merge_register(rec, 140);
	CHECK(g && g->n_entries == 1u + had && !merge_in_conflict(g)); /* B's (A's dead) */
	for (size_t i = 0; i < c->n_fields; i++) /* A's other fields, from the log */
		if (c->fields[i]->field != 140)
			CHECK(merge_current(merge_register(rec, c->fields[i]->field)) != NULL);
	uint8_t d_before[32];
	merge_digest(rec, d_before);
	uint64_t seq = rec->seq;
	/* what is stored */
	struct store_cursor *cur;
	const uint8_t *p;
	size_t n;
	uint64_t got;
	CHECK(store_records_cursor(t, seq - 1, &cur) == 0);
	CHECK(store_cursor_next(cur, &got, &p, &n) == 1 && got == seq);
	merge_rec_t *raw = recpack_unpack(a, p, n);
	CHECK(raw && raw->base_log_seq && !raw->log_seq && raw->n_registers == 1);
	CHECK_EQ_INT(raw->registers[0]->field, 140);
	CHECK(raw->base_origin == pa && raw->base_change_id == 1);
	CHECK(recpack_pointer(p, n) == raw->base_log_seq);
	CHECK(recpack_holds(p, n, 140, NULL) && !recpack_holds(p, n, 141, NULL));
	size_t stored_len = n;
	/* the same record in full is several times larger */
	CHECK(recpack_size(rec) > 2 * stored_len);
	store_cursor_close(cur);
	store_abort(t);
	store_close(s);

	/* naming the other report's change: corruption */
	uint8_t k[8], *v;
	size_t vlen;
	sh_put_be64(k, seq);
	raw_get(dir, "recs", k, 8, &v, &vlen);
	merge_rec_t *r2 = recpack_unpack(a, v, vlen);
	CHECK(r2 != NULL);
	uint64_t good = r2->base_log_seq;
	r2->base_log_seq = good + 2; /* the other report's create */
	uint8_t *out = arena_alloc(a, recpack_size(r2));
	size_t outn = recpack_pack(r2, out);
	raw_put(dir, "recs", k, 8, out, outn);
	s = tu_store_open(dir, NULL);
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_record_get(t, a, c->record_id.data, &rec) == -EIO);
	store_abort(t);
	store_close(s);
	/* put back, it reads as before */
	raw_put(dir, "recs", k, 8, v, vlen);
	s = tu_store_open(dir, NULL);
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_record_get(t, a, c->record_id.data, &rec) == 0);
	uint8_t d_after[32];
	merge_digest(rec, d_after);
	CHECK(!memcmp(d_before, d_after, 32));
	store_abort(t);
	free(v);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

static void test_pull_feeds(void)
{
	char dir[256];
	uint64_t pa, pb;
	struct store *s = open_with_phones(dir, &pa, &pb);
	uint64_t pc = tu_enrol(s, "C", "047", ROLE_DEVICE, NULL);
	struct arena *a = arena_new();
	struct buf body = {0};
	Shahidi__V1__Change *c = report_edited_by(s, a, pa, pb, 5, tu_now_hlc());

	struct store_txn *t;
	struct buf out = {0};
	struct sync_pull_info info;
	CHECK(store_begin(s, false, &t) == 0);
	/* A gets B's edit of its record; B, assigned the record, got A's
	 * create then, and not its own edit back. C gets nothing. */
	CHECK(sync_pull(t, pa, 0, 100, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 1);
	Shahidi__V1__PullResponse *pr = shahidi__v1__pull_response__unpack(NULL, out.len, out.data);
	CHECK(pr && pr->n_changes == 1 && pr->changes[0]->device == pb);
	CHECK(pr->changes[0]->change && pr->changes[0]->change->n_fields == 1);
	CHECK_EQ_INT(pr->next_cursor, info.next_cursor);
	CHECK(!pr->more);
	shahidi__v1__pull_response__free_unpacked(pr, NULL);
	buf_reset(&out);
	CHECK(sync_pull(t, pa, info.next_cursor, 100, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 0);
	buf_reset(&out);
	CHECK(sync_pull(t, pb, 0, 100, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 1);
	buf_reset(&out);
	CHECK(sync_pull(t, pc, 0, 100, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 0);
	store_abort(t);

	/* A coordinator assigns the record to C: C pulls its whole history. */
	struct store_txn *w;
	CHECK(store_begin(s, true, &w) == 0);
	CHECK(store_assign(w, a, c->record_id.data, pc) == 0);
	CHECK(store_commit(w) == 0);
	CHECK(store_begin(s, false, &t) == 0);
	buf_reset(&out);
	CHECK(sync_pull(t, pc, 0, 1, 1 << 20, &out, &info) == 0);
	CHECK(info.changes == 1 && info.more); /* paged */
	buf_reset(&out);
	CHECK(sync_pull(t, pc, info.next_cursor, 10, 1 << 20, &out, &info) == 0);
	CHECK(info.changes == 1 && !info.more);
	uint64_t waiting;
	CHECK(store_feed_count(t, pc, 0, &waiting) == 0 && waiting == 2);
	store_abort(t);
	buf_free(&out);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* A transaction's feed items for one device are written FEED_PACK (64) to
 * an entry; a pull pages through them one item at a time all the same, and
 * what waits is counted per item. 150 edits of a record in one push give
 * its other holder entries of 64, 64 and 22 items; a single-item entry (B's
 * edit in A's feed) is what a format 2 store holds. */
static void test_feed_entries_pack_and_page(void)
{
	char dir[256];
	uint64_t pa, pb;
	struct store *s = open_with_phones(dir, &pa, &pb);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	struct buf body = {0}, out = {0};
	Shahidi__V1__Change *c = report_edited_by(s, a, pa, pb, 9, hlc);

	enum { N = 150 };
	Shahidi__V1__Change *edits[N];
	uint64_t base[2] = {hlc, pa};
	for (size_t i = 0; i < N; i++) {
		edits[i] = tu_change(a, c->record_id.data, 2 + i, hlc + 200 + i);
		tu_set(a, edits[i], 140, tu_choice(a, i % 2 ? "high" : "low"), 1, base);
		base[0] = hlc + 200 + i;
	}
	tu_batch(&body, pa, 2, edits, N, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);

	struct store_txn *t;
	struct sync_pull_info info;
	uint64_t cursor = 0, waiting, last_log = 0, got = 0, pages = 0;
	CHECK(store_begin(s, false, &t) == 0);
	/* first, the create B got when it was assigned the record */
	CHECK(sync_pull(t, pb, 0, 1, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 1);
	cursor = info.next_cursor;
	CHECK(store_feed_count(t, pb, cursor, &waiting) == 0);
	CHECK_EQ_INT(waiting, N);
	do {
		/* pages of 50 end inside the entries of 64 */
		buf_reset(&out);
		CHECK(sync_pull(t, pb, cursor, 50, 1 << 20, &out, &info) == 0);
		Shahidi__V1__PullResponse *pr =
			shahidi__v1__pull_response__unpack(NULL, out.len, out.data);
		CHECK(pr != NULL);
		for (size_t i = 0; pr && i < pr->n_changes; i++) {
			CHECK(pr->changes[i]->cursor > cursor);
			CHECK(pr->changes[i]->log_seq > last_log); /* in log order, once */
			cursor = pr->changes[i]->cursor;
			last_log = pr->changes[i]->log_seq;
			got++;
		}
		shahidi__v1__pull_response__free_unpacked(pr, NULL);
		CHECK_EQ_INT(info.next_cursor, cursor);
		CHECK(store_feed_count(t, pb, cursor, &waiting) == 0);
		CHECK_EQ_INT(waiting, N - got);
		pages++;
	} while (info.more && pages < 10);
	CHECK_EQ_INT(got, N);
	CHECK_EQ_INT(pages, 3);
	/* A gets B's edit: one item */
	buf_reset(&out);
	CHECK(sync_pull(t, pa, 0, 100, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 1);
	CHECK(store_feed_count(t, pa, 0, &waiting) == 0 && waiting == 1);
	CHECK(store_feed_count(t, pa, info.next_cursor, &waiting) == 0 && waiting == 0);
	store_abort(t);
	buf_free(&out);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	CHECK_EQ_INT(raw_count_prefix(dir, "feed", pb), 4); /* the assignment's, then 3 */
	CHECK_EQ_INT(raw_count_prefix(dir, "feed", pa), 1);
	tu_rmrf(dir);
}

/* A batch body decoded as the server's decoder does (it must decode). */
static struct sync_batch *decode(const struct buf *body)
{
	struct sync_limits lim;
	struct form_verdict v;
	struct sync_batch *b = NULL;
	sync_limits_default(&lim);
	CHECK(sync_decode(FORMS, &lim, body->data, body->len, CODEC_IDENTITY, sh_now_ms(), &b, &v) ==
	      0);
	return b;
}

/* A new record written by the writer's fast path (a pointer to its change
 * in the log), or merged when the change also deletes, reads back as the
 * record merging the change into nothing gives. */
static void test_new_records_read_back_as_merged(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct arena *a = arena_new();
	for (uint64_t seed = 1; seed <= 200; seed++) {
		Shahidi__V1__Change *ch = tu_report(a, FORMS, seed, seed, tu_now_hlc() + seed);
		if (seed % 3 == 0)
			ch->fields[2]->hlc = ch->hlc + 5; /* a field stamped apart */
		if (seed % 7 == 0)
			tu_delete(a, ch, false, 0, NULL);
		struct buf body = {0};
		struct form_verdict v;
		tu_batch(&body, 1, seed, &ch, 1, CODEC_IDENTITY);
		struct sync_batch *b = decode(&body);
		buf_free(&body);
		struct store_change *sc = sync_batch_change(b, 0);
		/* a deletion, with its view, goes through the merge */
		CHECK(sc && !sc->new_record == (seed % 7 == 0));
		CHECK(sc->pointer == (seed % 7 != 0));
		merge_rec_t *slow = merge_rec_new(a, sc->record_id, sc->form_id);
		struct merge_change mc = {.device = sc->origin, .seq = sc->change_id,
					  .form_version = sc->form_version,
					  .writes = sc->writes, .n_writes = sc->n_writes,
					  .seen = sc->seen, .n_seen = sc->n_seen};
		CHECK(merge_apply(a, slow, &mc) == 0);

		struct store_txn *t;
		enum store_outcome out;
		uint64_t stored;
		CHECK(store_begin(s, true, &t) == 0);
		CHECK(apply_change(t, a, sc, sh_now_ms(), &out, &stored, &v) == 0);
		CHECK(out == STORE_APPLIED && stored == 0);
		CHECK(store_commit(t) == 0);
		merge_rec_t *back;
		CHECK(store_begin(s, false, &t) == 0);
		CHECK(store_record_get(t, a, sc->record_id, &back) == 0);
		uint8_t d1[32], d2[32];
		merge_digest(back, d1);
		merge_digest(slow, d2);
		CHECK(!memcmp(d1, d2, 32));
		CHECK(back->n_writers == 1 && back->writers[0] == sc->origin);
		CHECK(back->changes == 1 && back->log_seq == 0);
		store_abort(t);
		sync_batch_free(b);
		arena_reset(a);
	}
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* A FieldWrite of c's instance id (16 bytes) in a: field 0 (its removal,
 * having seen nothing) when value is NULL. */
static Shahidi__V1__FieldWrite *inst_write(struct arena *a, const uint8_t *id, uint32_t field,
					   Shahidi__V1__Value *value)
{
	Shahidi__V1__FieldWrite *fw = arena_alloc(a, sizeof(*fw));
	shahidi__v1__field_write__init(fw);
	fw->field = field;
	if (!value) {
		value = arena_alloc(a, sizeof(*value));
		shahidi__v1__value__init(value);
		value->kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
		value->boolean = true;
	}
	fw->value = value;
	fw->instance = (ProtobufCBinaryData){16, arena_memdup(a, id, 16)};
	return fw;
}

static void add_write(struct arena *a, Shahidi__V1__Change *c, Shahidi__V1__FieldWrite *fw)
{
	Shahidi__V1__FieldWrite **n = arena_alloc(a, (c->n_fields + 1) * sizeof(*n));
	if (c->n_fields)
		memcpy(n, c->fields, c->n_fields * sizeof(*n));
	n[c->n_fields++] = fw;
	c->fields = n;
}

/* A new record with repeat-group instances (form version 3), all new:
 * written by the fast path as a pointer record like a v1 report, and read
 * back as the record merging the change into nothing gives, instances in
 * their place; then edited, as both changes merged. A create that removes
 * an instance goes through the merge; one that carries more instances than
 * a group's max is refused there, and nothing of it stays. */
static void test_new_v3_records_read_back_as_merged(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct arena *a = arena_new();
	const struct form *f = form_registry_find(FORMS, "incident_report", 3);
	CHECK(f != NULL);
	const struct form_field *src = form_field(f, 300); /* sources.source_kind */
	CHECK(src && src->group && src->group->max == 20);
	size_t pointers = 0;
	for (uint64_t seed = 1; seed <= 120; seed++) {
		struct gen_rng rng = {seed};
		uint64_t now = sh_now_ms(), hlc = tu_now_hlc() + seed;
		Shahidi__V1__Change *ch = gen_report(&rng, a, f, seed, hlc, now);
		const uint8_t *inst = NULL;
		for (size_t i = 0; i < ch->n_fields && !inst; i++)
			if (ch->fields[i]->instance.len == 16)
				inst = ch->fields[i]->instance.data;
		CHECK(inst != NULL); /* victims and acts: at least one each */
		bool removes = seed % 5 == 0, too_many = seed % 11 == 0;
		if (removes)
			add_write(a, ch, inst_write(a, inst, 0, NULL));
		for (int k = 0; too_many && k <= 20; k++) {
			uint8_t id[16];
			gen_instance_id(&rng, now, id);
			add_write(a, ch, inst_write(a, id, 300, gen_value(&rng, a, src, now)));
		}
		struct buf body = {0};
		struct form_verdict v;
		tu_batch(&body, 1, seed, &ch, 1, CODEC_IDENTITY);
		struct sync_batch *b = decode(&body);
		buf_free(&body);
		struct store_change *sc = sync_batch_change(b, 0);
		CHECK(sc != NULL);
		CHECK(sc->pointer == (!removes && !too_many));
		pointers += sc->pointer;
		merge_rec_t *slow = merge_rec_new(a, sc->record_id, sc->form_id);
		struct merge_change mc = {.device = sc->origin, .seq = sc->change_id,
					  .form_version = sc->form_version,
					  .writes = sc->writes, .n_writes = sc->n_writes,
					  .seen = sc->seen, .n_seen = sc->n_seen};
		CHECK(merge_apply(a, slow, &mc) == 0);

		struct store_txn *t;
		enum store_outcome out;
		uint64_t stored;
		struct store_info before, after;
		CHECK(store_begin(s, true, &t) == 0);
		CHECK(store_info(t, &before) == 0);
		CHECK(apply_change(t, a, sc, sh_now_ms(), &out, &stored, &v) == 0);
		if (too_many) {
			CHECK(out == STORE_REJECTED && !strcmp(v.code, "too_many_instances"));
			CHECK(store_info(t, &after) == 0);
			CHECK(after.records == before.records && after.log_entries == before.log_entries);
			merge_rec_t *none;
			CHECK(store_record_get(t, a, sc->record_id, &none) == -ENOENT);
			store_abort(t);
			sync_batch_free(b);
			arena_reset(a);
			continue;
		}
		CHECK(out == STORE_APPLIED);
		CHECK(store_commit(t) == 0);
		merge_rec_t *back;
		CHECK(store_begin(s, false, &t) == 0);
		CHECK(store_record_get(t, a, sc->record_id, &back) == 0);
		uint8_t d1[32], d2[32];
		merge_digest(back, d1);
		merge_digest(slow, d2);
		CHECK(!memcmp(d1, d2, 32));
		CHECK(back->n_registers == slow->n_registers);
		for (size_t i = 0; i < back->n_registers; i++) {
			CHECK(back->registers[i]->field == slow->registers[i]->field);
			CHECK(back->registers[i]->instance.len == slow->registers[i]->instance.len);
		}
		CHECK(back->conflicts == slow->conflicts && back->log_seq == 0);
		store_abort(t);

		/* an edit of the first instance, based on the create's value of
		 * one of its fields */
		uint32_t field = 0;
		uint64_t base_hlc = 0;
		for (size_t i = 0; i < ch->n_fields && !field; i++)
			if (ch->fields[i]->instance.len == 16 && ch->fields[i]->field &&
			    !memcmp(ch->fields[i]->instance.data, inst, 16)) {
				field = ch->fields[i]->field;
				base_hlc = ch->fields[i]->hlc ? ch->fields[i]->hlc : ch->hlc;
			}
		CHECK(field != 0);
		Shahidi__V1__Change *ed = tu_change(a, sc->record_id, 1000 + seed, hlc + 10);
		ed->form_version = 3;
		Shahidi__V1__FieldWrite *fw =
			inst_write(a, inst, field, gen_value(&rng, a, form_field(f, field), now));
		Shahidi__V1__Stamp *st = arena_alloc(a, sizeof(*st));
		Shahidi__V1__Stamp **sp = arena_alloc(a, sizeof(*sp));
		shahidi__v1__stamp__init(st);
		st->hlc = base_hlc;
		st->device = 1;
		sp[0] = st;
		fw->supersedes = sp;
		fw->n_supersedes = 1;
		add_write(a, ed, fw);
		tu_batch(&body, 1, 1000 + seed, &ed, 1, CODEC_IDENTITY);
		struct sync_batch *b2 = decode(&body);
		buf_free(&body);
		struct store_change *sc2 = sync_batch_change(b2, 0);
		CHECK(sc2 != NULL && !sc2->pointer);
		struct merge_change mc2 = {.device = sc2->origin, .seq = sc2->change_id,
					   .form_version = sc2->form_version,
					   .writes = sc2->writes, .n_writes = sc2->n_writes};
		CHECK(merge_apply(a, slow, &mc2) == 0);
		CHECK(store_begin(s, true, &t) == 0);
		CHECK(apply_change(t, a, sc2, sh_now_ms(), &out, &stored, &v) == 0);
		CHECK(out == STORE_APPLIED);
		CHECK(store_commit(t) == 0);
		CHECK(store_begin(s, false, &t) == 0);
		CHECK(store_record_get(t, a, sc->record_id, &back) == 0);
		merge_digest(back, d1);
		merge_digest(slow, d2);
		CHECK(!memcmp(d1, d2, 32));
		/* (a create that removes its first victim flags the acts that
		 * link to it: the merge's rule, the same both ways) */
		CHECK(back->changes == 2 && back->conflicts == slow->conflicts);
		CHECK(removes || back->conflicts == 0);
		/* a pointer record's edit stores the edited register alone
		 * (format 8); the record a create merged is kept in full */
		struct store_cursor *cur;
		const uint8_t *p;
		size_t pn;
		uint64_t got;
		CHECK(store_records_cursor(t, back->seq - 1, &cur) == 0);
		CHECK(store_cursor_next(cur, &got, &p, &pn) == 1 && got == back->seq);
		merge_rec_t *raw = recpack_unpack(a, p, pn);
		CHECK(raw != NULL && !raw->base_log_seq == !sc->pointer);
		if (sc->pointer) {
			CHECK(raw->n_registers == 1 && raw->registers[0]->field == field);
			CHECK(recpack_holds(p, pn, field, inst) && !recpack_holds(p, pn, field, NULL));
		}
		store_cursor_close(cur);
		store_abort(t);
		sync_batch_free(b2);
		sync_batch_free(b);
		arena_reset(a);
	}
	CHECK(pointers > 60);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* The batches apply_in decoded: kept until kept_free(), after the commit,
 * as the writer keeps its batches (a record the transaction keeps unpacked
 * borrows their bytes until it ends). */
static struct sync_batch *KEPT[256];
static size_t N_KEPT;

static void kept_free(void)
{
	while (N_KEPT)
		sync_batch_free(KEPT[--N_KEPT]);
}

/* Applies change c of device 1 (decoded as the server does) in t. */
static void apply_in(struct store_txn *t, struct arena *a, Shahidi__V1__Change *c, uint64_t seq)
{
	struct buf body = {0};
	struct form_verdict v;
	enum store_outcome out;
	uint64_t stored;
	tu_batch(&body, 1, seq, &c, 1, CODEC_IDENTITY);
	struct sync_batch *b = decode(&body);
	buf_free(&body);
	CHECK(apply_change(t, a, sync_batch_change(b, 0), sh_now_ms(), &out, &stored, &v) == 0);
	CHECK(out == STORE_APPLIED);
	CHECK(N_KEPT < 256);
	KEPT[N_KEPT++] = b;
}

/* Device d's whole feed, in a read transaction: its log seqs in order. */
static size_t feed_of(struct store *s, uint64_t d, uint64_t *out, size_t max)
{
	struct store_txn *t;
	uint64_t cur = 0, seq;
	size_t n = 0;
	CHECK(store_begin(s, false, &t) == 0);
	while (n < max && store_feed_next(t, d, &cur, &seq) == 1)
		out[n++] = seq;
	store_abort(t);
	return n;
}

/* Feed items queued in one transaction reach every device's feed once, in
 * log order: edits fanned out to a record's holders (grouped by device),
 * an assignment's history queued after later changes (out of log order),
 * and more holders than the grouping keeps apart. */
static void test_feed_items_in_log_order(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	Shahidi__V1__Change *r1 = tu_report(a, FORMS, 1, 1, hlc);
	Shahidi__V1__Change *r2 = tu_report(a, FORMS, 2, 2, hlc + 1);
	const uint8_t *id1 = r1->record_id.data, *id2 = r2->record_id.data;
	struct store_txn *t;
	CHECK(store_begin(s, true, &t) == 0);
	apply_in(t, a, r1, 1);
	apply_in(t, a, r2, 2);
	/* record 1 held by devices 100-104, record 2 by 1000-1599 */
	for (uint64_t d = 100; d < 105; d++)
		CHECK(store_assign(t, a, id1, d) == 0);
	for (uint64_t d = 1000; d < 1600; d++)
		CHECK(store_assign(t, a, id2, d) == 0);
	CHECK(store_commit(t) == 0);

	/* edits of record 1, between them record 2's edits: few devices */
	CHECK(store_begin(s, true, &t) == 0);
	uint64_t cid = 10;
	for (int k = 0; k < 3; k++) {
		Shahidi__V1__Change *c = tu_change(a, id1, cid, hlc + cid);
		tu_set(a, c, 142, tu_text(a, "caseworker"), 0, NULL);
		apply_in(t, a, c, cid++);
	}
	CHECK(store_commit(t) == 0);
	/* 600 holders: past the grouping */
	CHECK(store_begin(s, true, &t) == 0);
	for (int k = 0; k < 2; k++) {
		Shahidi__V1__Change *c = tu_change(a, id2, cid, hlc + cid);
		tu_set(a, c, 142, tu_text(a, "caseworker"), 0, NULL);
		apply_in(t, a, c, cid++);
	}
	CHECK(store_commit(t) == 0);
	/* an assignment's history queued after a later edit */
	CHECK(store_begin(s, true, &t) == 0);
	Shahidi__V1__Change *c = tu_change(a, id1, cid, hlc + cid);
	tu_set(a, c, 142, tu_text(a, "again"), 0, NULL);
	apply_in(t, a, c, cid++);
	CHECK(store_assign(t, a, id2, 100) == 0); /* its history after 8 */
	CHECK(store_assign(t, a, id1, 7) == 0);
	CHECK(store_assign(t, a, id2, 8) == 0);
	CHECK(store_commit(t) == 0);

	/* log: 1 r1, 2 r2, 3-5 r1's edits, 6-7 r2's, 8 r1's last; each
	 * transaction's items in log order */
	uint64_t got[16];
	const uint64_t want1[] = {1, 3, 4, 5, 8}, want2[] = {2, 6, 7}, want7[] = {1, 3, 4, 5, 8};
	const uint64_t want100[] = {1, 3, 4, 5, 2, 6, 7, 8};
	CHECK_EQ_INT(feed_of(s, 100, got, 16), 8);
	CHECK(!memcmp(got, want100, sizeof(want100)));
	for (uint64_t d = 101; d < 105; d++) {
		CHECK_EQ_INT(feed_of(s, d, got, 16), 5);
		CHECK(!memcmp(got, want1, sizeof(want1)));
	}
	for (uint64_t d = 1000; d < 1600; d += 37) {
		CHECK_EQ_INT(feed_of(s, d, got, 16), 3);
		CHECK(!memcmp(got, want2, sizeof(want2)));
	}
	CHECK_EQ_INT(feed_of(s, 7, got, 16), 5);
	CHECK(!memcmp(got, want7, sizeof(want7)));
	CHECK_EQ_INT(feed_of(s, 8, got, 16), 3);
	CHECK(!memcmp(got, want2, sizeof(want2)));
	kept_free();
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* Applies change c of device 1 in t: its outcome. */
static enum store_outcome apply_out(struct store_txn *t, struct arena *a, Shahidi__V1__Change *c,
				    uint64_t seq, struct sync_batch **ret_b)
{
	struct buf body = {0};
	struct form_verdict v;
	enum store_outcome out;
	uint64_t stored;
	tu_batch(&body, 1, seq, &c, 1, CODEC_IDENTITY);
	struct sync_batch *b = decode(&body);
	buf_free(&body);
	CHECK(apply_change(t, a, sync_batch_change(b, 0), sh_now_ms(), &out, &stored, &v) == 0);
	*ret_b = b; /* kept to the commit, as the writer keeps its batches */
	return out;
}

/* Several changes of one record in one transaction (the writer keeps the
 * record it merged for the next of them): an assignment between them
 * stays, a change refused after its merge leaves nothing, and the record
 * read back is the merge of the applied changes. */
static void test_changes_of_one_record_in_one_commit(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct arena *a = arena_new(), *ma = arena_new();
	const struct form *f = form_registry_find(FORMS, "incident_report", 3);
	const struct form_field *kind = form_field(f, 300); /* sources: at most 20 */
	struct gen_rng rng = {99};
	uint64_t now = sh_now_ms(), hlc = tu_now_hlc();
	struct sync_batch *bs[8];
	size_t nb = 0;
	Shahidi__V1__Change *cr = gen_report(&rng, a, f, 1, hlc, now);
	const uint8_t *rid = cr->record_id.data;
	size_t sources = 0;
	for (size_t i = 0; i < cr->n_fields; i++)
		sources += cr->fields[i]->field == 300;
	struct store_txn *t;
	CHECK(store_begin(s, true, &t) == 0);
	CHECK(apply_out(t, a, cr, 1, &bs[nb++]) == STORE_APPLIED);
	/* the sources up to 20, a caseworker, an assignment, one source too
	 * many (refused), another caseworker */
	Shahidi__V1__Change *fill = tu_change(a, rid, 2, hlc + 2);
	fill->form_version = 3;
	uint8_t *first = NULL;
	for (size_t k = sources; k < 20; k++) {
		uint8_t *id = arena_alloc(a, 16);
		gen_instance_id(&rng, now, id);
		first = first ? first : id;
		add_write(a, fill, inst_write(a, id, 300, gen_value(&rng, a, kind, now)));
	}
	CHECK(first != NULL);
	CHECK(apply_out(t, a, fill, 2, &bs[nb++]) == STORE_APPLIED);
	Shahidi__V1__Change *e1 = tu_change(a, rid, 3, hlc + 3);
	e1->form_version = 3;
	tu_set(a, e1, 142, tu_text(a, "first"), 0, NULL);
	CHECK(apply_out(t, a, e1, 3, &bs[nb++]) == STORE_APPLIED);
	Shahidi__V1__Change *more = tu_change(a, rid, 4, hlc + 4);
	more->form_version = 3;
	uint8_t extra[16];
	gen_instance_id(&rng, now, extra);
	add_write(a, more, inst_write(a, extra, 300, gen_value(&rng, a, kind, now)));
	CHECK(apply_out(t, a, more, 4, &bs[nb++]) == STORE_REJECTED);
	/* one source removed, two added: refused once merged */
	Shahidi__V1__Change *swap = tu_change(a, rid, 7, hlc + 7);
	swap->form_version = 3;
	uint8_t extra2[16], extra3[16];
	gen_instance_id(&rng, now, extra2);
	gen_instance_id(&rng, now, extra3);
	add_write(a, swap, inst_write(a, first, 0, NULL));
	add_write(a, swap, inst_write(a, extra2, 300, gen_value(&rng, a, kind, now)));
	add_write(a, swap, inst_write(a, extra3, 300, gen_value(&rng, a, kind, now)));
	CHECK(apply_out(t, a, swap, 7, &bs[nb++]) == STORE_REJECTED);
	Shahidi__V1__Change *e2 = tu_change(a, rid, 5, hlc + 5);
	e2->form_version = 3;
	tu_set(a, e2, 141, tu_date(a, "2025-01-02"), 0, NULL);
	CHECK(apply_out(t, a, e2, 5, &bs[nb++]) == STORE_APPLIED);
	CHECK(store_assign(t, a, rid, 42) == 0);
	Shahidi__V1__Change *e3 = tu_change(a, rid, 6, hlc + 6);
	e3->form_version = 3;
	tu_set(a, e3, 142, tu_text(a, "second"), 0, NULL);
	CHECK(apply_out(t, a, e3, 6, &bs[nb++]) == STORE_APPLIED);
	CHECK(store_commit(t) == 0);

	merge_rec_t *back, *want = NULL;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_record_get(t, ma, rid, &back) == 0);
	CHECK(back->n_assigned == 1 && back->assigned[0] == 42);
	CHECK(back->changes == 5);
	CHECK(!merge_register_in(back, extra, 300) && !merge_register_in(back, extra2, 300));
	CHECK(!merge_register_in(back, first, 0)); /* the refused removal */
	/* the same changes merged from nothing, the refused one left out */
	for (size_t i = 0; i < nb; i++) {
		struct store_change *sc = sync_batch_change(bs[i], 0);
		if (i == 3 || i == 4)
			continue; /* the refused ones */
		if (!want)
			want = merge_rec_new(ma, sc->record_id, sc->form_id);
		struct merge_change mc = {.device = sc->origin, .seq = sc->change_id,
					  .form_version = sc->form_version,
					  .writes = sc->writes, .n_writes = sc->n_writes};
		CHECK(merge_apply(ma, want, &mc) == 0);
	}
	uint8_t d1[32], d2[32];
	merge_digest(back, d1);
	merge_digest(want, d2);
	CHECK(!memcmp(d1, d2, 32));
	store_abort(t);
	for (size_t i = 0; i < nb; i++)
		sync_batch_free(bs[i]);
	arena_free(ma);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* Whether field's current value in rec is the text s. */
static bool text_is(struct arena *a, const merge_rec_t *rec, uint32_t field, const char *s)
{
	const merge_entry_t *e = merge_current(merge_register(rec, field));
	uint8_t want[256];
	size_t n = shahidi__v1__value__pack(tu_text(a, s), want);
	return e && e->value.len == n && !memcmp(e->value.data, want, n);
}

/* Record i of ids (device 1's) set to text in t, as change *cid. */
static void edit_in(struct store_txn *t, struct arena *a, const uint8_t *id, uint64_t hlc,
		    uint64_t *cid, const char *text)
{
	Shahidi__V1__Change *c = tu_change(a, id, *cid, hlc + *cid);
	tu_set(a, c, 142, tu_text(a, text), 0, NULL);
	apply_in(t, a, c, *cid);
	++*cid;
}

/* Reads record id in t: its number of changes, and whether field 142 is
 * text. */
static bool record_is(struct store_txn *t, struct arena *a, const uint8_t *id, uint32_t changes,
		      const char *text)
{
	merge_rec_t *rec;
	CHECK(store_record_get(t, a, id, &rec) == 0);
	return rec->changes == changes && text_is(a, rec, 142, text);
}

/* A record changed more than once in a transaction is kept unpacked in it
 * and packed and written once, at its end (or when something else must
 * read the stored bytes): every read in the transaction still sees it as
 * merged so far, a change after such a read is written too, a record
 * pushed out of the transaction's few slots is written then, and the
 * commit writes the rest. */
static void test_records_kept_in_a_commit_are_written_once(void)
{
	enum { N = 20 }; /* past the slots (ST_RC_SLOTS, 16) */
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc(), cid = 1;
	const uint8_t *ids[N];
	struct store_txn *t;
	CHECK(store_begin(s, true, &t) == 0);
	for (int i = 0; i < N; i++) {
		Shahidi__V1__Change *r = tu_report(a, FORMS, 100 + i, cid, hlc + cid);
		ids[i] = r->record_id.data;
		apply_in(t, a, r, cid++);
	}
	CHECK(store_commit(t) == 0);

	CHECK(store_begin(s, true, &t) == 0);
	edit_in(t, a, ids[0], hlc, &cid, "a"); /* once: written at once */
	edit_in(t, a, ids[0], hlc, &cid, "b"); /* twice: kept */
	CHECK(record_is(t, a, ids[0], 3, "b"));
	edit_in(t, a, ids[0], hlc, &cid, "c"); /* kept again after that read */
	/* a walk over the stored records sees it as merged too */
	struct store_cursor *cur;
	uint64_t seq;
	const uint8_t *p;
	size_t len;
	bool seen = false;
	CHECK(store_records_cursor(t, 0, &cur) == 0);
	while (store_cursor_next(cur, &seq, &p, &len) == 1) {
		merge_rec_t *rec = recpack_unpack(a, p, len);
		CHECK(rec != NULL);
		if (memcmp(rec->record_id.data, ids[0], 16))
			continue;
		merge_rec_expand(rec);
		CHECK_EQ_INT(rec->changes, 4);
		CHECK(text_is(a, rec, 142, "c"));
		seen = true;
	}
	store_cursor_close(cur);
	CHECK(seen);
	edit_in(t, a, ids[0], hlc, &cid, "d");
	/* every other record changed twice: record 0 leaves the slots */
	for (int i = 1; i < N; i++) {
		edit_in(t, a, ids[i], hlc, &cid, "x");
		edit_in(t, a, ids[i], hlc, &cid, "y");
	}
	edit_in(t, a, ids[0], hlc, &cid, "e");
	CHECK(record_is(t, a, ids[1], 3, "y"));
	edit_in(t, a, ids[1], hlc, &cid, "z"); /* after the read */
	CHECK(store_commit(t) == 0);

	CHECK(store_begin(s, false, &t) == 0);
	CHECK(record_is(t, a, ids[0], 6, "e"));
	CHECK(record_is(t, a, ids[1], 4, "z"));
	for (int i = 2; i < N; i++)
		CHECK(record_is(t, a, ids[i], 3, "y"));
	store_abort(t);

	/* an aborted transaction leaves nothing of its kept records */
	CHECK(store_begin(s, true, &t) == 0);
	edit_in(t, a, ids[2], hlc, &cid, "gone");
	edit_in(t, a, ids[2], hlc, &cid, "gone too");
	store_abort(t);
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(record_is(t, a, ids[2], 3, "y"));
	store_abort(t);
	kept_free();
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* A change for a record of another form is refused, and not remembered:
 * sent again it is refused again, not taken for a duplicate; the same
 * change id for the right form is then applied. */
static void test_change_for_another_form_is_refused(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint64_t dev = tu_enrol(s, "A", "047", ROLE_DEVICE, NULL);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	Shahidi__V1__Change *ch = tu_report(a, FORMS, 3, 1, hlc);
	struct buf body = {0};
	tu_batch(&body, dev, 1, &ch, 1, CODEC_IDENTITY);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	struct tu_state before, after;
	tu_state(s, &before);

	Shahidi__V1__Change *e = tu_change(a, ch->record_id.data, 2, hlc + 10);
	tu_set(a, e, 140, tu_choice(a, "high"), 0, NULL);
	tu_batch(&body, dev, 2, &e, 1, CODEC_IDENTITY);
	struct form_verdict v;
	struct sync_batch *b = decode(&body);
	struct store_change *sc = sync_batch_change(b, 0);
	const char *form = sc->form_id;
	for (int round = 0; round < 3; round++) {
		struct store_txn *t;
		enum store_outcome out;
		uint64_t stored;
		sc->form_id = round < 2 ? "another_form" : form;
		CHECK(store_begin(s, true, &t) == 0);
		CHECK(apply_change(t, a, sc, sh_now_ms(), &out, &stored, &v) == 0);
		CHECK(store_commit(t) == 0);
		tu_state(s, &after);
		if (round < 2) {
			CHECK(out == STORE_REJECTED);
			CHECK_EQ_STR(v.code, "form_mismatch");
			CHECK(tu_state_eq(&before, &after));
		} else {
			CHECK(out == STORE_APPLIED);
			CHECK_EQ_INT(after.log_entries, before.log_entries + 1);
		}
	}
	sync_batch_free(b);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* Rewrites dir's store as format 2 kept a record's history: an rlog entry
 * per change, no chain through the log, no head in the record. */
static void raw_make_format2(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi log, rlog, recs, meta;
	MDB_cursor *c;
	MDB_val k, v;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 32) == 0);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "log", 0, &log) == 0);
	CHECK(mdb_dbi_open(txn, "rlog", 0, &rlog) == 0);
	CHECK(mdb_dbi_open(txn, "recs", 0, &recs) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
	CHECK(mdb_cursor_open(txn, log, &c) == 0);
	for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		Shahidi__Store__V1__LogEntry *e =
			shahidi__store__v1__log_entry__unpack(NULL, v.mv_size, v.mv_data);
		CHECK(e != NULL);
		uint8_t rk[16], buf[4096];
		sh_put_be64(rk, e->record_seq);
		memcpy(rk + 8, k.mv_data, 8);
		MDB_val rkey = {16, rk}, empty = {0, ""};
		CHECK(mdb_put(txn, rlog, &rkey, &empty, 0) == 0);
		e->prev_log_seq = 0;
		MDB_val nv = {shahidi__store__v1__log_entry__pack(e, buf), buf};
		CHECK(nv.mv_size < sizeof(buf));
		uint8_t kc[8]; /* k points into the page the put rewrites */
		memcpy(kc, k.mv_data, 8);
		MDB_val kv = {8, kc};
		CHECK(mdb_cursor_put(c, &kv, &nv, MDB_CURRENT) == 0);
		shahidi__store__v1__log_entry__free_unpacked(e, NULL);
	}
	mdb_cursor_close(c);
	CHECK(mdb_cursor_open(txn, recs, &c) == 0);
	for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		Shahidi__Store__V1__Record *r =
			shahidi__store__v1__record__unpack(NULL, v.mv_size, v.mv_data);
		CHECK(r != NULL);
		uint8_t buf[8192];
		r->head_log_seq = 0;
		MDB_val nv = {shahidi__store__v1__record__pack(r, buf), buf};
		CHECK(nv.mv_size < sizeof(buf));
		uint8_t kc[8];
		memcpy(kc, k.mv_data, 8);
		MDB_val kv = {8, kc};
		CHECK(mdb_cursor_put(c, &kv, &nv, MDB_CURRENT) == 0);
		shahidi__store__v1__record__free_unpacked(r, NULL);
	}
	mdb_cursor_close(c);
	MDB_val fk = {6, "format"}, fv = {1, "2"};
	CHECK(mdb_put(txn, meta, &fk, &fv, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

/* The log seqs of a record's history. */
static size_t history_of(struct store *s, struct arena *a, const uint8_t id[16], uint64_t **ret)
{
	struct store_txn *t;
	merge_rec_t *rec;
	size_t n = 0;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_record_get(t, a, id, &rec) == 0);
	CHECK(store_record_history(t, a, rec, ret, &n) == 0);
	store_abort(t);
	return n;
}

/* A record's history is a chain through the log (format 3); a store of
 * format 2 kept it in an index (rlog). Its records' histories read the
 * same after the upgrade, and go on through the chain with the next edit;
 * a record assigned then gets every change. */
static void test_history_from_before_format_3(void)
{
	char dir[256];
	uint64_t pa, pb;
	struct store *s = open_with_phones(dir, &pa, &pb);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc(), batch = 1;
	Shahidi__V1__Change *c = tu_report(a, FORMS, 4, 1, hlc);
	Shahidi__V1__Change *other = tu_report(a, FORMS, 5, 2, hlc + 1);
	const uint8_t *id = c->record_id.data;
	struct buf body = {0};
	Shahidi__V1__Change *two[2] = {c, other};
	tu_batch(&body, pa, batch++, two, 2, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	for (uint64_t i = 0; i < 2; i++) {
		Shahidi__V1__Change *e = tu_change(a, id, 3 + i, hlc + 10 + i);
		tu_set(a, e, 140, tu_choice(a, i ? "high" : "low"), 0, NULL);
		tu_batch(&body, pa, batch++, &e, 1, CODEC_DEFLATE);
		CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	}
	uint64_t *h, *h2;
	size_t n = history_of(s, a, id, &h);
	CHECK_EQ_INT(n, 3);
	CHECK(history_of(s, a, other->record_id.data, &h2) == 1 && h2[0] == 2);
	store_close(s);

	raw_make_format2(dir);
	s = tu_store_open(dir, NULL);
	size_t m = history_of(s, a, id, &h2);
	CHECK(m == n && !memcmp(h, h2, n * sizeof(*h)));
	Shahidi__V1__Change *e = tu_change(a, id, 5, hlc + 20);
	tu_set(a, e, 140, tu_choice(a, "low"), 0, NULL);
	tu_batch(&body, pa, batch++, &e, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	CHECK_EQ_INT(history_of(s, a, id, &h2), 4);
	CHECK(!memcmp(h, h2, n * sizeof(*h)) && h2[3] > h2[2]);

	struct store_txn *t;
	CHECK(store_begin(s, true, &t) == 0);
	CHECK(store_assign(t, a, id, pb) == 0);
	CHECK(store_commit(t) == 0);
	CHECK(store_begin(s, false, &t) == 0);
	uint64_t cur = 0, log_seq;
	for (size_t i = 0; i < 4; i++) {
		CHECK(store_feed_next(t, pb, &cur, &log_seq) == 1);
		CHECK_EQ_INT(log_seq, h2[i]);
	}
	CHECK(store_feed_next(t, pb, &cur, &log_seq) == 0);
	store_abort(t);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

struct tamper {
	const uint8_t *id;
	uint64_t hlc;
};

/* Makes a record what format 3 stored for it: field 140's stamp brought
 * back to the server's clock (orig_hlc holds the one sent). */
static int tamper_fn(struct store_txn *t, void *ud)
{
	struct tamper *x = ud;
	struct arena *a = arena_new();
	merge_rec_t *rec;
	int r = store_record_get(t, a, x->id, &rec);
	if (r == 0) {
		merge_reg_t *reg = (merge_reg_t *)merge_register(rec, 142);
		CHECK(reg && reg->n_entries == 1);
		reg->entries[0]->orig_hlc = reg->entries[0]->hlc;
		reg->entries[0]->hlc = x->hlc;
		r = store_record_replace(t, rec);
	}
	arena_free(a);
	return r;
}

/* A store of format 3 is merged again from its log at the first open for
 * writing: its records become what today's rule makes of the same
 * changes, and the digests before and after are told. */
static void test_old_format_is_rebuilt(void)
{
	char dir[256];
	uint64_t pa, pb;
	struct store *s = open_with_phones(dir, &pa, &pb);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	Shahidi__V1__Change *c = report_edited_by(s, a, pa, pb, 21, hlc);
	/* A, its clock two days ahead, sets field 142 */
	uint64_t ahead = hlc_make(hlc_ms(hlc) + 2 * 86400000ull, 0);
	Shahidi__V1__Change *e = tu_change(a, c->record_id.data, 2, ahead);
	tu_set(a, e, 142, tu_text(a, "Achieng"), 0, NULL);
	struct buf body = {0};
	tu_batch(&body, pa, 2, &e, 1, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	for (int i = 0; i < 30; i++) /* reports nobody edited: pointer records */
		push_reports(s, pb, 10 + (uint64_t)i, 1, 100 + (uint64_t)i, 0);
	struct tu_state good, bad, after;
	tu_state(s, &good);
	struct tamper x = {c->record_id.data, hlc + 5};
	CHECK(store_write(s, tamper_fn, &x) == 0);
	tu_state(s, &bad);
	CHECK(memcmp(good.records, bad.records, 32));
	store_close(s);

	raw_put(dir, "meta", "format", 6, "3", 1);
	s = tu_store_open(dir, NULL);
	FILE *log = tmpfile();
	CHECK(log && rebuild_if_old(s, log) == 0);
	tu_state(s, &after);
	CHECK(tu_state_eq(&good, &after));
	char line[512] = {0}, hex_bad[65], hex_good[65];
	rewind(log);
	CHECK(fgets(line, sizeof(line), log) != NULL);
	sh_hex(bad.records, 32, hex_bad);
	sh_hex(good.records, 32, hex_good);
	CHECK(strstr(line, "store format 3 -> 8") && strstr(line, hex_bad) && strstr(line, hex_good));
	CHECK(strstr(line, "31 records, 1 rebuilt")); /* the rest point at their change */
	fclose(log);
	/* once is enough */
	store_close(s);
	s = tu_store_open(dir, NULL);
	CHECK_EQ_INT(store_opened_format(s), STORE_FORMAT_VERSION);
	CHECK(rebuild_if_old(s, NULL) == 0);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

/* Formats 4 to 7 differ from 8 only in what 8 may hold (4: pointer
 * records of v3 creates; 5: the wide table; 6: compressed changes; 7:
 * edited records that keep their first change in the log): such a store is
 * marked 8 when opened to write, and nothing is merged again. A format 5
 * store without the wide table is read as it is by the read-only tools. */
static void test_formats_4_to_7_are_marked_8_without_a_rebuild(void)
{
	static const char *const olds[] = {"4", "5", "6", "7"};
	for (size_t i = 0; i < 4; i++) {
		char dir[256], fmt[16];
		uint64_t pa, pb;
		struct store *s = open_with_phones(dir, &pa, &pb);
		for (int k = 0; k < 5; k++)
			push_reports(s, pb, 1 + (uint64_t)k, 1, 200 + (uint64_t)k, 0);
		struct tu_state before, after;
		tu_state(s, &before);
		store_close(s);
		raw_put(dir, "meta", "format", 6, olds[i], 1);
		raw_drop(dir, "wide");
		struct store_opts ro = {.read_only = true};
		s = tu_store_open(dir, &ro);
		tu_state(s, &after);
		CHECK(tu_state_eq(&before, &after));
		store_close(s);
		s = tu_store_open(dir, NULL);
		CHECK_EQ_INT(store_opened_format(s), olds[i][0] - '0');
		FILE *log = tmpfile();
		CHECK(log && rebuild_if_old(s, log) == 0);
		CHECK_EQ_INT(ftell(log), 0); /* nothing merged again, nothing said */
		fclose(log);
		tu_state(s, &after);
		CHECK(tu_state_eq(&before, &after));
		store_close(s);
		raw_format(dir, fmt);
		CHECK_EQ_STR(fmt, "8");
		CHECK_EQ_INT(raw_count(dir, "wide"), 0); /* the table is there */
		tu_rmrf(dir);
	}
}

/* Phones A, P0-P7 and Z in a store with opts.wide_scan = wide_scan; A's
 * report R (batch 1) assigned to P0-P7; then `edits` edits of R by A, in
 * batches of per_batch (batch 2 on), each a wide entry naming P0-P7.
 * Returns A's next batch number. */
struct wide_store {
	char dir[256];
	struct store *s;
	uint64_t pa, p[8], pz, hlc;
};

static uint64_t wide_store_open(struct wide_store *w, struct arena *a, size_t wide_scan,
				uint64_t seed, int edits, int per_batch)
{
	tu_tmpdir(w->dir);
	struct store_opts o = {.wide_scan = wide_scan};
	w->s = tu_store_open(w->dir, &o);
	w->pa = tu_enrol(w->s, "A", "047", ROLE_DEVICE, NULL);
	for (int i = 0; i < 8; i++) {
		char name[8];
		snprintf(name, sizeof(name), "P%d", i);
		w->p[i] = tu_enrol(w->s, name, "047", ROLE_DEVICE, NULL);
	}
	w->pz = tu_enrol(w->s, "Z", "047", ROLE_DEVICE, NULL);
	w->hlc = tu_now_hlc();
	Shahidi__V1__Change *r = tu_report(a, FORMS, seed, 1, w->hlc);
	tu_push1(w->s, FORMS, w->pa, 1, r);
	const uint8_t *r_id = r->record_id.data;
	for (int i = 0; i < 8; i++)
		tu_assign(w->s, r_id, w->p[i]); /* R: 8 holders besides A */
	Shahidi__V1__Change **e = arena_alloc(a, (size_t)per_batch * sizeof(*e));
	CHECK(e != NULL);
	struct buf body = {0};
	uint64_t seen[2] = {w->hlc, w->pa}, batch = 2;
	for (int k = 0; k < edits; batch++) {
		int n = 0;
		for (; n < per_batch && k < edits; n++, k++) {
			e[n] = tu_change(a, r_id, 2 + (uint64_t)k, w->hlc + 10 + (uint64_t)k);
			tu_set(a, e[n], 140, tu_choice(a, k % 2 ? "high" : "low"), 1, seen);
			seen[0] = w->hlc + 10 + (uint64_t)k;
		}
		tu_batch(&body, w->pa, batch, e, (size_t)n, CODEC_DEFLATE);
		CHECK(tu_push(w->s, FORMS, &body, NULL, NULL) == 0);
	}
	buf_free(&body);
	CHECK_EQ_INT(raw_count(w->dir, "wide"), edits);
	return batch;
}

/* Changes a device pulls from cursor on, to the end (*end: its cursor
 * then). */
static uint64_t pulled_after(struct store_txn *t, uint64_t dev, uint64_t cursor, uint64_t *end)
{
	struct buf out = {0};
	struct sync_pull_info info;
	uint64_t got = 0;
	for (int pulls = 0; pulls < 100; pulls++) {
		buf_reset(&out);
		CHECK(sync_pull(t, dev, cursor, 3, 1 << 20, &out, &info) == 0);
		cursor = info.next_cursor;
		got += info.changes;
		if (!info.more)
			break;
	}
	buf_free(&out);
	if (end)
		*end = cursor;
	return got;
}

/* A phone that holds none of the widely held records is not made to read
 * all of their changes in one pull: it reads at most wide_scan of them a
 * pull, answered with no change and more = true, its cursor moving past
 * them, then its own changes. Holders get every one of theirs. */
static void test_wide_scan_is_bounded(void)
{
	struct wide_store w;
	struct arena *a = arena_new();
	struct buf out = {0};
	enum { EDITS = 10 }; /* in one batch, wide_scan 4 */
	uint64_t batch = wide_store_open(&w, a, 4, 41, EDITS, EDITS);
	struct store *s = w.s;
	uint64_t pz = w.pz;
	/* then Q, A's, assigned to Z: Z's one change, after the wide entries */
	Shahidi__V1__Change *q = tu_report(a, FORMS, 42, 100, w.hlc + 100);
	tu_push1(s, FORMS, w.pa, batch, q);
	tu_assign(s, q->record_id.data, pz);

	struct store_txn *t;
	struct sync_pull_info info;
	uint64_t waiting;
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_feed_count(t, pz, 0, &waiting) == 0);
	CHECK_EQ_INT(waiting, 1);
	uint64_t cursor = 0, got = 0;
	int pulls = 0, empty = 0;
	do {
		buf_reset(&out);
		CHECK(sync_pull(t, pz, cursor, 100, 1 << 20, &out, &info) == 0);
		CHECK(info.next_cursor > cursor); /* it moves on every time */
		cursor = info.next_cursor;
		got += info.changes;
		empty += info.changes == 0 && info.more;
		pulls++;
	} while (info.more && pulls < 20);
	CHECK(!info.more);
	CHECK_EQ_INT(got, 1);
	CHECK_EQ_INT(empty, (EDITS + 3) / 4 - 1); /* 4, 4, then the last 2 and Q */
	/* a holder gets R's create and its 10 edits, however many pulls */
	CHECK_EQ_INT(pulled_after(t, w.p[3], 0, &cursor), 1 + EDITS);
	CHECK(store_feed_count(t, w.p[3], cursor, &waiting) == 0 && waiting == 0);
	store_abort(t);
	buf_free(&out);
	arena_free(a);
	store_close(s);
	tu_rmrf(w.dir);
}

/* The status page's count of what each device has yet to pull, for all
 * devices in one walk of the wide table: what pulling would give each,
 * whatever the others' cursors; past the walk's bound (16 x wide_scan
 * entries, newest first) a stale device's count is a lower bound while a
 * device that pulled lately is still counted exactly. */
static void test_feed_count_many(void)
{
	struct wide_store w;
	struct arena *a = arena_new();
	enum { EDITS = 24 }; /* in batches of 8; the walk: 16 x wide_scan 1 */
	wide_store_open(&w, a, 1, 51, EDITS, 8);
	struct store *s = w.s;
	uint64_t pa = w.pa, *p = w.p, pz = w.pz;

	struct store_txn *t;
	CHECK(store_begin(s, false, &t) == 0);
	/* cursors: A and P0-P2 at 0; P3-P5 part way (after one pull of 10,
	 * 14 and 20 changes: 15, 11 and 5 to go); P6, P7 at the end; Z at 0,
	 * holding nothing */
	uint64_t ids[10] = {pa, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], pz};
	uint64_t cursors[10] = {0}, want[10], got[10];
	const uint32_t first_pull[5] = {10, 14, 20, 1000, 1000};
	for (int i = 4; i < 9; i++) {
		struct buf out = {0};
		struct sync_pull_info info;
		CHECK(sync_pull(t, ids[i], 0, first_pull[i - 4], 1 << 20, &out, &info) == 0);
		cursors[i] = info.next_cursor;
		buf_free(&out);
	}
	/* ids ascending, as the function wants them */
	for (int i = 1; i < 10; i++)
		for (int j = i; j > 0 && ids[j] < ids[j - 1]; j--) {
			uint64_t x = ids[j], c = cursors[j];
			ids[j] = ids[j - 1];
			cursors[j] = cursors[j - 1];
			ids[j - 1] = x;
			cursors[j - 1] = c;
		}
	for (int i = 0; i < 10; i++)
		want[i] = pulled_after(t, ids[i], cursors[i], NULL);
	CHECK(store_feed_count_many(t, 10, ids, cursors, got) == 0);
	for (int i = 0; i < 10; i++) {
		uint64_t one;
		CHECK(store_feed_count(t, ids[i], cursors[i], &one) == 0);
		CHECK_EQ_INT(one, got[i]); /* alone or with the others: the same */
		if (want[i] <= 16) {
			CHECK_EQ_INT(got[i], want[i]); /* within the walk: exact */
		} else {
			/* a holder at 0: R's create (its assignment) and 24
			 * edits, of which the walk reaches the newest 16 */
			CHECK_EQ_INT(want[i], 1 + EDITS);
			CHECK_EQ_INT(got[i], 1 + 16);
		}
	}
	/* P3-P5, part way, counted exactly beside the stale ones; P6, P7
	 * and A (the sender) have nothing to pull, nor Z */
	int partway = 0, none = 0, stale = 0;
	for (int i = 0; i < 10; i++) {
		partway += want[i] == 15 || want[i] == 11 || want[i] == 5;
		none += want[i] == 0;
		stale += want[i] == 1 + EDITS;
	}
	CHECK_EQ_INT(partway, 3);
	CHECK_EQ_INT(none, 4);
	CHECK_EQ_INT(stale, 3);
	/* out of order: refused */
	uint64_t bad[2] = {ids[1], ids[0]}, bc[2] = {0, 0};
	CHECK_EQ_INT(store_feed_count_many(t, 2, bad, bc, got), -EINVAL);
	store_abort(t);
	arena_free(a);
	store_close(s);
	tu_rmrf(w.dir);
}

/* A change for FEED_WIDE_MIN (8) devices or more is one wide entry, not an
 * item in each of their feeds. Each of them pulls it once, in feed seq
 * order with its own items and pages; the sender does not; a device that
 * holds none of it pulls nothing and its cursor moves past it; a device
 * assigned the record later gets its whole history. */
static void test_wide_feed_entries(void)
{
	char dir[256];
	uint64_t pa, pb, p[10];
	struct store *s = open_with_phones(dir, &pa, &pb);
	for (int i = 0; i < 10; i++) {
		char name[8];
		snprintf(name, sizeof(name), "P%d", i);
		p[i] = tu_enrol(s, name, "047", ROLE_DEVICE, NULL);
	}
	uint64_t pz = tu_enrol(s, "Z", "047", ROLE_DEVICE, NULL);
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	struct buf body = {0}, out = {0};
	/* log 1: report R, 2: report Q, both A's */
	Shahidi__V1__Change *rq[2] = {tu_report(a, FORMS, 31, 1, hlc),
				      tu_report(a, FORMS, 32, 2, hlc + 1)};
	tu_batch(&body, pa, 1, rq, 2, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);
	const uint8_t *r_id = rq[0]->record_id.data, *q_id = rq[1]->record_id.data;
	tu_assign(s, r_id, pb); /* R: 11 holders besides A */
	for (int i = 0; i < 10; i++)
		tu_assign(s, r_id, p[i]);
	tu_assign(s, q_id, p[0]); /* Q: one */
	/* log 3: an edit of R, 4: of Q, 5: of R */
	Shahidi__V1__Change *e[3];
	uint64_t seen_r[2] = {hlc, pa}, seen_q[2] = {hlc + 1, pa};
	e[0] = tu_change(a, r_id, 3, hlc + 10);
	tu_set(a, e[0], 140, tu_choice(a, "high"), 1, seen_r);
	e[1] = tu_change(a, q_id, 4, hlc + 11);
	tu_set(a, e[1], 140, tu_choice(a, "high"), 1, seen_q);
	seen_r[0] = hlc + 10;
	e[2] = tu_change(a, r_id, 5, hlc + 12);
	tu_set(a, e[2], 140, tu_choice(a, "low"), 1, seen_r);
	tu_batch(&body, pa, 2, e, 3, CODEC_DEFLATE);
	CHECK(tu_push(s, FORMS, &body, NULL, NULL) == 0);

	struct store_txn *t;
	struct sync_pull_info info;
	uint64_t waiting;
	CHECK(store_begin(s, false, &t) == 0);
	for (int d = -1; d < 10; d++) {
		uint64_t dev = d < 0 ? pb : p[d];
		/* what it has yet to pull, then all of it in pages of one */
		uint64_t want = d == 0 ? 5 : 3, cursor = 0, got = 0, seen_logs = 0;
		CHECK(store_feed_count(t, dev, 0, &waiting) == 0);
		CHECK_EQ_INT(waiting, want);
		for (int page = 0; page < 10; page++) {
			buf_reset(&out);
			CHECK(sync_pull(t, dev, cursor, 1, 1 << 20, &out, &info) == 0);
			Shahidi__V1__PullResponse *pr =
				shahidi__v1__pull_response__unpack(NULL, out.len, out.data);
			CHECK(pr != NULL);
			for (size_t i = 0; pr && i < pr->n_changes; i++) {
				CHECK(pr->changes[i]->cursor > cursor);
				cursor = pr->changes[i]->cursor;
				uint64_t bit = 1ull << pr->changes[i]->log_seq;
				CHECK(!(seen_logs & bit)); /* once */
				seen_logs |= bit;
				got++;
			}
			shahidi__v1__pull_response__free_unpacked(pr, NULL);
			CHECK_EQ_INT(info.next_cursor, cursor);
			if (!info.more)
				break;
		}
		CHECK_EQ_INT(got, want);
		CHECK_EQ_INT(seen_logs, d == 0 ? 0x3e : 0x2a); /* {1..5} or {1, 3, 5} */
		CHECK(store_feed_count(t, dev, cursor, &waiting) == 0 && waiting == 0);
	}
	/* the sender gets nothing back; Z, holding nothing, gets nothing, and
	 * its cursor moves past the wide entries */
	buf_reset(&out);
	CHECK(sync_pull(t, pa, 0, 100, 1 << 20, &out, &info) == 0);
	CHECK_EQ_INT(info.changes, 0);
	buf_reset(&out);
	CHECK(sync_pull(t, pz, 0, 100, 1 << 20, &out, &info) == 0);
	CHECK(info.changes == 0 && !info.more && info.next_cursor > 0);
	uint64_t z_cursor = info.next_cursor;
	CHECK(store_feed_count(t, pz, 0, &waiting) == 0 && waiting == 0);
	store_abort(t);
	/* two wide entries; B's and P1's feeds hold only the assignment's */
	CHECK_EQ_INT(raw_count(dir, "wide"), 2);
	CHECK_EQ_INT(raw_count_prefix(dir, "feed", pb), 1);
	CHECK_EQ_INT(raw_count_prefix(dir, "feed", p[1]), 1);

	/* Z assigned R now: its history, after Z's cursor */
	tu_assign(s, r_id, pz);
	CHECK(store_begin(s, false, &t) == 0);
	buf_reset(&out);
	CHECK(sync_pull(t, pz, z_cursor, 100, 1 << 20, &out, &info) == 0);
	Shahidi__V1__PullResponse *pr = shahidi__v1__pull_response__unpack(NULL, out.len, out.data);
	CHECK(pr && pr->n_changes == 3);
	for (size_t i = 0; pr && i < pr->n_changes; i++)
		CHECK_EQ_INT(pr->changes[i]->log_seq, 1 + 2 * i);
	shahidi__v1__pull_response__free_unpacked(pr, NULL);
	store_abort(t);
	buf_free(&out);
	buf_free(&body);
	arena_free(a);
	store_close(s);
	tu_rmrf(dir);
}

int main(void)
{
	FORMS = tu_forms(false);
	RUN(test_open_creates_private_store);
	RUN(test_format_version_is_checked);
	RUN(test_feed_entries_pack_and_page);
	RUN(test_change_for_another_form_is_refused);
	RUN(test_history_from_before_format_3);
	RUN(test_map_grows_and_stops_at_its_cap);
	RUN(test_hash_chain_detects_tampering);
	RUN(test_log_keeps_changes_compressed);
	RUN(test_batches_and_changes_are_deduplicated);
	RUN(test_clock_ahead_keeps_its_stamps);
	RUN(test_tokens_and_revocation);
	RUN(test_edited_record_keeps_its_first_change_in_the_log);
	RUN(test_pull_feeds);
	RUN(test_new_records_read_back_as_merged);
	RUN(test_new_v3_records_read_back_as_merged);
	RUN(test_feed_items_in_log_order);
	RUN(test_changes_of_one_record_in_one_commit);
	RUN(test_records_kept_in_a_commit_are_written_once);
	RUN(test_old_format_is_rebuilt);
	RUN(test_formats_4_to_7_are_marked_8_without_a_rebuild);
	RUN(test_wide_feed_entries);
	RUN(test_wide_scan_is_bounded);
	RUN(test_feed_count_many);
	form_registry_free(FORMS);
	return 0;
}
