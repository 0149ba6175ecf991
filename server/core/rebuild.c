#include "rebuild.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "merge.h"
#include "recpack.h"
#include "store.h"
#include "wire.h"

/* Records per transaction: a rebuild of a large store writes in steps. */
#define CHUNK 1000

struct chunk {
	uint64_t after;   /* records after this seq are still to do */
	bool done;
	uint64_t rebuilt;
};

/* What a record's history says of erasure: only `shahidi erase` drops a
 * change's content, all of a record's changes before the one it appends
 * (Change.erased, which only the server makes). */
struct erasure_trail {
	uint64_t dropped;        /* changes whose content is gone */
	uint64_t kept_before;    /* changes with content before the erasure */
	uint64_t dropped_after;  /* changes whose content is gone after it */
	bool erasure;            /* the erasure's own change is in the history */
};

/* A record made from nothing through every change of its history (in a);
 * what the history says of erasure in *trail (may be NULL). */
static int remake(struct store_txn *t, struct arena *a, const merge_rec_t *old,
		  merge_rec_t **ret, struct erasure_trail *trail)
{
	struct erasure_trail tr = {0};
	uint64_t *seqs;
	size_t n;
	int r;
	if ((r = store_record_history(t, a, old, &seqs, &n)) < 0)
		return r;
	merge_rec_t *rec = merge_rec_new(a, old->record_id.data, old->form_id);
	if (!rec)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *chg;
		size_t len;
		uint64_t pusher;
		struct wire_change wc;
		struct merge_change mc;
		if ((r = store_log_change(t, a, seqs[i], &chg, &len, &pusher)) < 0)
			return r == -ENOENT ? -EIO : r;
		if (!len) {
			tr.dropped++;
			tr.dropped_after += tr.erasure;
			continue; /* erased: its content is gone, on purpose */
		}
		uint8_t *copy = arena_memdup(a, chg, len); /* the map moves as we write */
		if (!copy && len)
			return -ENOMEM;
		if ((r = wire_read_change(a, a, SIZE_MAX, SIZE_MAX, copy, len, &wc)) < 0)
			return r == -ENOMEM ? r : -EIO;
		if (wc.record_id_len != 16 || memcmp(wc.record_id, old->record_id.data, 16))
			return -EBADMSG; /* a change of another record in its history */
		if (wc.erased && !tr.erasure) {
			tr.erasure = true;
			tr.kept_before = i - tr.dropped; /* the changes before it with content */
		}
		if ((r = wire_change_merge(a, &wc, pusher, &mc)) < 0 || (r = merge_apply(a, rec, &mc)) < 0)
			return r;
	}
	*ret = rec;
	if (trail)
		*trail = tr;
	return 0;
}

/* Why a record's erasure trail is not what `shahidi erase` leaves, or
 * NULL when it is (or it was never erased). */
static const char *erasure_wrong(const merge_rec_t *stored, const struct erasure_trail *tr)
{
	if (tr->dropped && !stored->erased_ms)
		return "the content of a change was dropped, but the record was not erased";
	if (stored->erased_ms && !tr->erasure)
		return "it is marked erased, but its history holds no erasure";
	if (tr->erasure && (tr->kept_before || tr->dropped_after))
		return "its erasure does not cover exactly the changes before it";
	return NULL;
}

/* One record, from nothing, through every change of its history. */
int rebuild_record(struct store_txn *t, struct arena *a, merge_rec_t *old)
{
	merge_rec_t *rec;
	int r = remake(t, a, old, &rec, NULL);
	if (r < 0)
		return r;
	/* What the merge does not make: where it is, when, who was assigned. */
	rec->seq = old->seq;
	rec->first_received_ms = old->first_received_ms;
	rec->last_changed_ms = old->last_changed_ms;
	rec->changes = old->changes;
	rec->head_log_seq = old->head_log_seq;
	rec->assigned = old->assigned;
	rec->n_assigned = old->n_assigned;
	rec->erased_ms = old->erased_ms;
	return store_record_replace(t, rec);
}

static int rebuild_chunk(struct store_txn *t, void *ud)
{
	struct chunk *c = ud;
	struct arena *a = arena_new();
	struct store_cursor *cur = NULL;
	uint64_t seqs[CHUNK], last = c->after;
	size_t n = 0;
	int r;
	if (!a)
		return -ENOMEM;
	/* Which records, first: the cursor must not watch them change. */
	if ((r = store_records_cursor(t, c->after, &cur)) < 0)
		goto out;
	const uint8_t *data;
	size_t len;
	uint64_t seq;
	while (n < CHUNK && (r = store_cursor_next(cur, &seq, &data, &len)) == 1) {
		last = seq;
		merge_rec_t *rec = recpack_unpack(a, data, len);
		if (!rec) {
			r = -EIO;
			goto out;
		}
		if (!rec->log_seq) /* a pointer record is its change already */
			seqs[n++] = seq;
	}
	if (r < 0)
		goto out;
	bool end = r == 0;
	store_cursor_close(cur);
	cur = NULL;
	for (size_t i = 0; i < n; i++) {
		merge_rec_t *rec;
		arena_reset(a);
		uint64_t s = seqs[i] - 1;
		if ((r = store_record_next(t, a, &s, &rec)) != 1 || s != seqs[i]) {
			r = r < 0 ? r : -EIO;
			goto out;
		}
		if ((r = rebuild_record(t, a, rec)) < 0)
			goto out;
	}
	c->after = last;
	c->done = end;
	c->rebuilt += n;
	r = 0;
out:
	store_cursor_close(cur);
	arena_free(a);
	return r;
}

static int digest(struct store *s, uint8_t out[32], uint64_t *ret_records)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	int r = a ? store_begin(s, false, &t) : -ENOMEM;
	if (r == 0) {
		r = store_records_digest(t, a, out, ret_records);
		store_abort(t);
	}
	arena_free(a);
	return r;
}

int rebuild_records(struct store *s, struct rebuild_report *ret)
{
	struct chunk c = {0};
	struct rebuild_report rep = {0};
	int r = digest(s, rep.before, &rep.records);
	while (r == 0 && !c.done)
		r = store_write(s, rebuild_chunk, &c);
	if (r == 0)
		r = digest(s, rep.after, &rep.records);
	rep.rebuilt = c.rebuilt;
	*ret = rep;
	return r;
}

void rebuild_print(FILE *f, const char *who, const struct rebuild_report *r)
{
	char b[65], a[65];
	for (int i = 0; i < 32; i++) {
		snprintf(b + 2 * i, 3, "%02x", r->before[i]);
		snprintf(a + 2 * i, 3, "%02x", r->after[i]);
	}
	fprintf(f, "%s: %llu records, %llu rebuilt from the change log; digest before %s, after %s\n",
		who, (unsigned long long)r->records, (unsigned long long)r->rebuilt, b, a);
}

int rebuild_if_old(struct store *s, FILE *log)
{
	unsigned fmt = store_opened_format(s);
	if (fmt == 0 || fmt >= STORE_FORMAT_REBUILD_BELOW)
		return 0; /* new, or its records follow today's rule */
	struct rebuild_report rep;
	int r = rebuild_records(s, &rep);
	if (r == 0 && log) {
		char who[64];
		snprintf(who, sizeof(who), "store format %u -> %u", fmt, STORE_FORMAT_VERSION);
		rebuild_print(log, who, &rep);
	}
	return r;
}

struct vchunk {
	uint64_t after;
	bool done;
	struct rebuild_check *c;
};

static void found_bad(struct rebuild_check *c, const uint8_t *id, const char *why)
{
	c->bad = true;
	if (id)
		memcpy(c->bad_id, id, 16);
	snprintf(c->why, sizeof(c->why), "%s", why);
}

/* One page of records in one read transaction, so that a long verify does
 * not pin old pages while the server writes. */
static int verify_chunk(struct store *s, struct vchunk *v)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	int r = a ? store_begin(s, false, &t) : -ENOMEM;
	if (r < 0) {
		arena_free(a);
		return r;
	}
	uint64_t seq = v->after;
	size_t n = 0;
	merge_rec_t *stored;
	for (;;) {
		if (n >= CHUNK || v->c->bad)
			break;
		uint64_t at = seq;
		if ((r = store_record_next(t, a, &seq, &stored)) == -EIO) {
			/* bytes that do not decode: the record after `at` */
			char why[120];
			snprintf(why, sizeof(why), "the record stored after seq %llu does not decode",
				 (unsigned long long)at);
			found_bad(v->c, NULL, why);
			r = 0;
			break;
		}
		if (r != 1)
			break;
		merge_rec_t *made;
		struct erasure_trail tr;
		const char *wrong;
		uint8_t d1[32], d2[32];
		n++;
		v->c->records++;
		v->after = seq;
		int m = remake(t, a, stored, &made, &tr);
		if (m == -EBADMSG || m == -EIO || m == -ENOENT) {
			found_bad(v->c, stored->record_id.data,
				  "its history holds a change of another record, or a change is missing");
		} else if (m < 0) {
			r = m;
			break;
		} else if ((wrong = erasure_wrong(stored, &tr))) {
			/* Dropping content keeps the chain (erasure must): only
			 * this tells an erasure from content removed behind the
			 * custody trail. */
			found_bad(v->c, stored->record_id.data, wrong);
		} else {
			v->c->erased += stored->erased_ms != 0;
			merge_digest(stored, d1);
			merge_digest(made, d2);
			if (memcmp(d1, d2, 32) || stored->conflicts != made->conflicts ||
			    stored->delete_conflict != made->delete_conflict)
				found_bad(v->c, stored->record_id.data,
					  "its merged values are not what its changes make");
		}
		arena_reset(a);
	}
	if (r == 0 || v->c->bad)
		v->done = true; /* the end, or the first bad record */
	if (r == 1)
		r = 0;          /* a full page: on with the next */
	store_abort(t);
	arena_free(a);
	return r < 0 ? r : 0;
}

int rebuild_verify(struct store *s, struct rebuild_check *ret)
{
	struct vchunk v = {.c = ret};
	memset(ret, 0, sizeof(*ret));
	int r = 0;
	while (r == 0 && !v.done)
		r = verify_chunk(s, &v);
	return r;
}
