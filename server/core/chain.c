/* chain: the change log, its hash chain, and a record's history through
 * it (see store.c for the chain's definition). */
#include "store_int.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>


#include "arena.h"
#include "codec.h"
#include "common.h"
#include "fields.h"
#include "zchange.h"

int store_log_get(struct store_txn *t, struct arena *a, uint64_t seq, store_log_t **ret)
{
	uint8_t k[8];
	sh_put_be64(k, seq);
	int r = st_get_pb(t, a, DB_LOG, k, 8, &shahidi__store__v1__log_entry__descriptor,
			  (void **)ret);
	store_log_t *e = r == 0 ? *ret : NULL;
	if (e && e->change_zstd.len) {
		const uint8_t *p;
		size_t n;
		if ((r = zchange_unpack(a, e->change_zstd.data, e->change_zstd.len, &p, &n)) < 0)
			return r;
		e->change.data = (uint8_t *)p;
		e->change.len = n;
		e->change_zstd.data = NULL;
		e->change_zstd.len = 0;
	}
	return r;
}

/* Log entry seq's bytes, through the transaction's log cursor: lookups
 * in seq order (an export's, a history's) stay on their leaf page. */
static int log_raw(struct store_txn *t, uint64_t seq, MDB_val *ret)
{
	uint8_t k[8];
	int r;
	sh_put_be64(k, seq);
	if (!t->log_cursor && (r = st_lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_LOG],
							     &t->log_cursor))) < 0)
		return r;
	MDB_val key = val_of(k, 8);
	return st_lmdb_err(mdb_cursor_get(t->log_cursor, &key, ret, MDB_SET_KEY));
}

int store_log_change(struct store_txn *t, struct arena *a, uint64_t seq, const uint8_t **ret,
		     size_t *ret_len, uint64_t *ret_pusher)
{
	const uint8_t *z = NULL;
	size_t z_len = 0;
	MDB_val v;
	struct pb_field f;
	size_t pos = 0;
	int r;
	if ((r = log_raw(t, seq, &v)) < 0)
		return r;
	bool erased = false;
	*ret = NULL;
	*ret_len = 0;
	*ret_pusher = 0;
	while ((r = codec_pb_next(v.mv_data, v.mv_size, &pos, &f)) > 0) {
		if (f.number == LOG_ENTRY_DEVICE && f.wire_type == 1)
			*ret_pusher = f.varint;
		else if (f.number == LOG_ENTRY_CHANGE && f.wire_type == 2) {
			*ret = f.data;
			*ret_len = f.len;
		} else if (f.number == LOG_ENTRY_CHANGE_ZSTD && f.wire_type == 2) {
			z = f.data;
			z_len = f.len;
		} else if (f.number == LOG_ENTRY_ERASED && f.wire_type == 0) {
			erased = f.varint != 0;
		}
	}
	if (z_len && r == 0 && !erased && (r = zchange_unpack(a, z, z_len, ret, ret_len)) < 0)
		return r;
	if (erased && r == 0) {
		*ret = (const uint8_t *)""; /* its content is gone: no bytes */
		*ret_len = 0;
	}
	return r < 0 || !*ret ? -EIO : 0;
}

int store_log_seen(struct store_txn *t, uint64_t seq, uint8_t ret_digest[32],
		   uint64_t *ret_stored_hlc)
{
	MDB_val v;
	int r = log_raw(t, seq, &v);
	if (r < 0)
		return r;
	struct pb_field f;
	size_t pos = 0;
	bool digest = false;
	*ret_stored_hlc = 0;
	while ((r = codec_pb_next(v.mv_data, v.mv_size, &pos, &f)) > 0) {
		if (f.number == LOG_ENTRY_STORED_HLC && f.wire_type == 1) {
			*ret_stored_hlc = f.varint;
		} else if (f.number == LOG_ENTRY_CHANGE_DIGEST && f.wire_type == 2 &&
			   f.len == 32) {
			memcpy(ret_digest, f.data, 32);
			digest = true;
		}
	}
	return r < 0 || !digest ? -EIO : 0;
}

/* LogEntry.prev_log_seq of entry seq. */
static int log_prev(struct store_txn *t, uint64_t seq, uint64_t *ret)
{
	MDB_val v;
	int r = log_raw(t, seq, &v);
	if (r < 0)
		return r == -ENOENT ? -EIO : r;
	struct pb_field f;
	size_t pos = 0;
	*ret = 0;
	while ((r = codec_pb_next(v.mv_data, v.mv_size, &pos, &f)) > 0)
		if (f.number == LOG_ENTRY_PREV_LOG_SEQ && f.wire_type == 0)
			*ret = f.varint;
	return r < 0 ? -EIO : 0;
}

int store_record_history(struct store_txn *t, struct arena *a, const merge_rec_t *rec,
			 uint64_t **ret, size_t *ret_n)
{
	uint64_t *chain = NULL, *all = NULL;
	size_t n_chain = 0, cap_chain = 0, n = 0, cap = 0;
	int r;
	/* The chain, newest first... */
	for (uint64_t at = rec->log_seq ? rec->log_seq : rec->head_log_seq, prev; at; at = prev) {
		if ((r = st_u64_push(a, &chain, &n_chain, &cap_chain, at)) < 0 ||
		    (r = log_prev(t, at, &prev)) < 0)
			return r;
		if (prev >= at)
			return -EIO; /* a chain only goes back */
	}
	/* ...after what formats 1 and 2 indexed before it began (its first
	 * entry is the newest of those, or the record's first change). */
	uint64_t before = n_chain ? chain[n_chain - 1] : UINT64_MAX, cur = 0;
	MDB_val v;
	while ((r = st_next_pair(t, DB_RLOG, rec->seq, &cur, &v)) == 1 && cur < before)
		if ((r = st_u64_push(a, &all, &n, &cap, cur)) < 0)
			return r;
	if (r < 0)
		return r;
	for (size_t i = n_chain; i-- > 0;)
		if ((r = st_u64_push(a, &all, &n, &cap, chain[i])) < 0)
			return r;
	*ret = all;
	*ret_n = n;
	return 0;
}

static void chain_hash(const uint8_t prev[32], uint64_t seq, const store_log_t *e,
		       uint8_t out[32])
{
	uint8_t buf[32 + 5 * 8 + 32];
	memcpy(buf, prev, 32);
	sh_put_be64(buf + 32, seq);
	sh_put_be64(buf + 40, e->received_ms);
	sh_put_be64(buf + 48, e->device);
	sh_put_be64(buf + 56, e->batch_seq);
	sh_put_be64(buf + 64, e->record_seq);
	memset(buf + 72, 0, 32);
	if (e->change_digest.len == 32)
		memcpy(buf + 72, e->change_digest.data, 32);
	crypto_generichash(out, 32, buf, sizeof(buf), NULL, 0);
}

int64_t store_verify_chain(struct store *s, void (*progress)(uint64_t, uint64_t, void *), void *ud)
{
	return store_verify_chain_each(s, progress, NULL, ud);
}

int64_t store_verify_chain_each(struct store *s, void (*progress)(uint64_t, uint64_t, void *),
				void (*each)(uint64_t seq, const uint8_t hash[32], void *), void *ud)
{
	uint8_t prev[32] = {0};
	uint64_t seq = 0, total = 0, last = 0;
	struct arena *a = arena_new();
	int64_t bad = 0;
	int r = 0;
	if (!a)
		return -ENOMEM;

	for (;;) {
		/* One read transaction per page of entries: a long walk must not
		 * pin old pages while the server writes. */
		struct store_txn *t;
		if ((r = store_begin(s, false, &t)) < 0)
			goto out;
		total = t->next_log_seq - 1;
		uint8_t head[32];
		memcpy(head, t->head_hash, 32);
		int n = 0, more = 1;
		while (n < 4096 && (more = st_next_u64_key(t, DB_LOG, &seq, &(MDB_val){0})) == 1) {
			store_log_t *e;
			arena_reset(a);
			/* a change that does not decode is a bad entry, not an error */
			int got = store_log_get(t, a, seq, &e);
			if (got < 0 && got != -EBADMSG) {
				r = got;
				break;
			}
			uint8_t h[32], d[32];
			bool ok = got == 0 && seq == last + 1;
			if (ok) {
				chain_hash(prev, seq, e, h);
				ok = e->hash.len == 32 && !memcmp(h, e->hash.data, 32);
			}
			if (ok && e->change.len) {
				crypto_generichash(d, 32, e->change.data, e->change.len, NULL, 0);
				ok = e->change_digest.len == 32 && !memcmp(d, e->change_digest.data, 32);
			}
			if (!ok) {
				bad = (int64_t)(seq == last + 1 ? seq : last + 1);
				break;
			}
			memcpy(prev, h, 32);
			last = seq;
			if (each)
				each(seq, h, ud);
			if (progress && (seq & 0xffff) == 0)
				progress(seq, total, ud);
			n++;
		}
		if (more < 0)
			r = more;
		bool end = more == 0 && !bad && r == 0;
		if (end && (last != total || (last && memcmp(prev, head, 32)))) {
			bad = (int64_t)(last + 1); /* entries missing at the end */
		}
		store_abort(t);
		if (r < 0 || bad || end)
			break;
	}
out:
	arena_free(a);
	if (r < 0)
		return r;
	return bad;
}

int store_log_hash(struct store_txn *t, uint64_t seq, uint8_t out[32])
{
	struct arena *a = arena_new();
	store_log_t *e;
	int r = a ? store_log_get(t, a, seq, &e) : -ENOMEM;
	if (r == 0 && e->hash.len != 32)
		r = -EIO;
	if (r == 0)
		memcpy(out, e->hash.data, 32);
	arena_free(a);
	return r;
}

int64_t store_verify_tail(struct store *s, uint64_t n)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	int64_t bad = 0;
	int r = a ? store_begin(s, false, &t) : -ENOMEM;
	if (r < 0) {
		arena_free(a);
		return r;
	}
	uint64_t last = t->next_log_seq - 1, first = last > n ? last - n + 1 : 1;
	uint8_t prev[32] = {0};
	if (first > 1 && (r = store_log_hash(t, first - 1, prev)) < 0)
		bad = (int64_t)(first - 1);
	for (uint64_t seq = first; r == 0 && !bad && seq <= last; seq++) {
		store_log_t *e;
		uint8_t h[32];
		arena_reset(a);
		if ((r = store_log_get(t, a, seq, &e)) < 0) {
			bad = (int64_t)seq; /* an entry missing where the counters say */
			r = 0;
			break;
		}
		chain_hash(prev, seq, e, h);
		if (e->hash.len != 32 || memcmp(h, e->hash.data, 32))
			bad = (int64_t)seq;
		memcpy(prev, h, 32);
	}
	if (r == 0 && !bad && last && memcmp(prev, t->head_hash, 32))
		bad = (int64_t)last; /* the counters' head is not the last link */
	store_abort(t);
	arena_free(a);
	return r < 0 && !bad ? r : bad;
}

int store_log_erase(struct store_txn *t, uint64_t seq)
{
	struct arena *a = arena_new();
	store_log_t *e;
	uint8_t k[8];
	int r = a ? store_log_get(t, a, seq, &e) : -ENOMEM;
	if (r == 0) {
		/* the digest and the link stay: the chain still verifies */
		e->change.data = NULL;
		e->change.len = 0; /* change_zstd: store_log_get left none */
		e->erased = true;
		sh_put_be64(k, seq);
		r = st_put_pb(t, DB_LOG, k, 8, &e->base, 0);
	}
	arena_free(a);
	return r;
}

/* ---- appending ---- */

int st_append_log(struct store_txn *t, const struct st_log_append *in)
{
	store_log_t e = SHAHIDI__STORE__V1__LOG_ENTRY__INIT;
	uint8_t hash[32], tail[80], lk[8];
	e.received_ms = in->now_ms;
	e.device = in->pusher;
	e.batch_seq = in->batch_seq;
	e.record_seq = in->record_seq;
	e.change_digest.data = (uint8_t *)in->digest;
	e.change_digest.len = 32;
	chain_hash(t->head_hash, in->log_seq, &e, hash);
	/* the fields not prepared with the change (device, batch_seq,
	 * change, change_digest) */
	size_t n = codec_put_uint(tail, LOG_ENTRY_RECEIVED_MS, in->now_ms);
	n += codec_put_uint(tail + n, LOG_ENTRY_RECORD_SEQ, in->record_seq);
	n += codec_put_bytes(tail + n, LOG_ENTRY_HASH, hash, 32);
	if (in->prev)
		n += codec_put_uint(tail + n, LOG_ENTRY_PREV_LOG_SEQ, in->prev);
	sh_put_be64(lk, in->log_seq);
	int r = st_put_concat(t, DB_LOG, lk, 8, in->prefix, in->prefix_len, tail, n, MDB_APPEND);
	if (r < 0)
		return r == -EEXIST ? -EIO : r;
	memcpy(t->head_hash, hash, 32);
	return 0;
}
