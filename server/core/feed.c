/* feed: what each device pulls, and assignment (see store.c, "Feeds"). */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>


#include "arena.h"
#include "common.h"
#include "recpack.h"

/* Queues a feed item; st_feed_flush writes them at the end of the
 * transaction. */
int st_feed_add(struct store_txn *t, uint64_t device, uint64_t log_seq)
{
	if (t->n_feed == t->cap_feed) {
		size_t cap = t->cap_feed ? 2 * t->cap_feed : 256;
		struct feed_item *f = realloc(t->feed, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		t->feed = f;
		t->cap_feed = cap;
	}
	t->feed[t->n_feed++] = (struct feed_item){device, log_seq};
	return 0;
}

static int u64_cmp(const void *x, const void *y);

static int wide_add(struct store_txn *t, uint64_t log_seq, const uint64_t *devs, size_t n)
{
	if (t->n_wide == t->cap_wide) {
		size_t cap = t->cap_wide ? 2 * t->cap_wide : 64;
		struct wide_item *w = realloc(t->wide, cap * sizeof(*w));
		if (!w)
			return -ENOMEM;
		t->wide = w;
		t->cap_wide = cap;
	}
	if (t->cap_wide_devs - t->n_wide_devs < n) {
		size_t cap = t->cap_wide_devs ? t->cap_wide_devs : 1024;
		while (cap - t->n_wide_devs < n)
			cap *= 2;
		uint64_t *d = realloc(t->wide_devs, cap * sizeof(*d));
		if (!d)
			return -ENOMEM;
		t->wide_devs = d;
		t->cap_wide_devs = cap;
	}
	memcpy(t->wide_devs + t->n_wide_devs, devs, n * sizeof(*devs));
	t->wide[t->n_wide++] = (struct wide_item){log_seq, t->n_wide_devs, n};
	t->n_wide_devs += n;
	return 0;
}

int st_feed_fanout(struct store_txn *t, uint64_t log_seq, uint64_t origin, uint64_t pusher,
		   const uint64_t *writers, size_t n_writers, const uint64_t *assigned,
		   size_t n_assigned)
{
	size_t total = n_writers + n_assigned;
	uint64_t small[2 * FEED_WIDE_MIN], *to = total <= 2 * FEED_WIDE_MIN ? small : NULL;
	if (!to && !(to = malloc(total * sizeof(*to))))
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < total; i++) {
		uint64_t d = i < n_writers ? writers[i] : assigned[i - n_writers];
		if (d != origin && d != pusher)
			to[n++] = d;
	}
	/* Few: each once, in the order they came (no sort); many: sorted, as
	 * a wide entry names them. */
	size_t u = 0;
	if (n < FEED_WIDE_MIN) {
		for (size_t i = 0; i < n; i++)
			if (!st_has_u64(to, u, to[i]))
				to[u++] = to[i];
	} else {
		qsort(to, n, sizeof(*to), u64_cmp);
		for (size_t i = 0; i < n; i++)
			if (!u || to[u - 1] != to[i])
				to[u++] = to[i];
	}
	int r = 0;
	if (u >= FEED_WIDE_MIN) {
		r = wide_add(t, log_seq, to, u);
	} else {
		for (size_t i = 0; i < u && r == 0; i++)
			r = st_feed_add(t, to[i], log_seq);
	}
	if (to != small)
		free(to);
	return r;
}

static int feed_item_cmp(const void *x, const void *y)
{
	const struct feed_item *a = x, *b = y;
	if (a->device != b->device)
		return a->device < b->device ? -1 : 1;
	return a->log_seq < b->log_seq ? -1 : a->log_seq > b->log_seq;
}

static int u64_cmp(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

#define FEED_DEVICES 512 /* distinct devices the bucket sort handles */

/* Orders the queued items by (device, log seq) without comparing them
 * n log n times: they are queued in log order (one change's fan-out after
 * another's), so grouping them by device, keeping their order, is enough.
 * 0, or 1 when they are not in log order or hold too many devices (then
 * the caller sorts them), or -ENOMEM. A change of a record 64 phones hold
 * queues 63 items: sorting them with qsort was 6% of the writer's
 * instructions in the groups mix. */
static int feed_bucket_sort(struct store_txn *t)
{
	struct slot {
		uint64_t device;
		size_t at; /* count, then where its next item goes */
		bool used;
	} *slots;
	uint64_t devs[FEED_DEVICES];
	size_t n_devs = 0;
	for (size_t i = 1; i < t->n_feed; i++)
		if (t->feed[i].log_seq < t->feed[i - 1].log_seq)
			return 1;
	if (!(slots = calloc(2 * FEED_DEVICES, sizeof(*slots))))
		return -ENOMEM;
	for (size_t i = 0; i < t->n_feed; i++) {
		uint64_t d = t->feed[i].device;
		size_t h = (size_t)((d * 0x9e3779b97f4a7c15ull) >> 54); /* 10 bits */
		while (slots[h].used && slots[h].device != d)
			h = (h + 1) % (2 * FEED_DEVICES);
		if (!slots[h].used) {
			if (n_devs == FEED_DEVICES) {
				free(slots);
				return 1;
			}
			slots[h] = (struct slot){d, 0, true};
			devs[n_devs++] = d;
		}
		slots[h].at++;
	}
	qsort(devs, n_devs, sizeof(*devs), u64_cmp);
	struct feed_item *out = malloc(t->cap_feed * sizeof(*out));
	if (!out) {
		free(slots);
		return -ENOMEM;
	}
	size_t start = 0;
	for (size_t k = 0; k < n_devs; k++) {
		size_t h = (size_t)((devs[k] * 0x9e3779b97f4a7c15ull) >> 54);
		while (slots[h].device != devs[k])
			h = (h + 1) % (2 * FEED_DEVICES);
		size_t count = slots[h].at;
		slots[h].at = start;
		start += count;
	}
	for (size_t i = 0; i < t->n_feed; i++) {
		uint64_t d = t->feed[i].device;
		size_t h = (size_t)((d * 0x9e3779b97f4a7c15ull) >> 54);
		while (slots[h].device != d)
			h = (h + 1) % (2 * FEED_DEVICES);
		out[slots[h].at++] = t->feed[i];
	}
	free(slots);
	free(t->feed);
	t->feed = out;
	return 0;
}

/* Writes the queued wide items, in log order, each under the next feed
 * seq, appended. */
static int wide_flush(struct store_txn *t)
{
	if (!t->n_wide)
		return 0; /* nearly every flush: no malloc for nothing */
	size_t most = 0;
	for (size_t i = 0; i < t->n_wide; i++)
		most = SH_MAX(most, t->wide[i].n);
	uint8_t *v = malloc(8 * (most + 1));
	int r = v ? 0 : -ENOMEM;
	for (size_t i = 0; i < t->n_wide && r == 0; i++) {
		const struct wide_item *w = &t->wide[i];
		uint8_t k[8];
		sh_put_be64(k, t->next_feed_seq);
		sh_put_be64(v, w->log_seq);
		for (size_t j = 0; j < w->n; j++)
			sh_put_be64(v + 8 * (j + 1), t->wide_devs[w->off + j]);
		if ((r = st_put_raw(t, DB_WIDE, k, 8, v, 8 * (w->n + 1), MDB_APPEND)) == 0)
			t->next_feed_seq++;
	}
	free(v);
	if (r == 0) {
		t->n_wide = t->n_wide_devs = 0;
		t->counters_dirty = true;
	}
	return r;
}

/* Writes the queued items: the wide ones, then per device, in log order,
 * at most FEED_PACK to an entry. */
int st_feed_flush(struct store_txn *t)
{
	int r = wide_flush(t);
	if (r < 0 || !t->n_feed)
		return r;
	int sorted = feed_bucket_sort(t);
	if (sorted < 0)
		return sorted;
	if (sorted > 0)
		qsort(t->feed, t->n_feed, sizeof(*t->feed), feed_item_cmp);
	for (size_t i = 0; i < t->n_feed;) {
		uint64_t device = t->feed[i].device;
		uint8_t k[16], v[8 * FEED_PACK];
		size_t n = 0;
		while (i + n < t->n_feed && n < FEED_PACK && t->feed[i + n].device == device) {
			sh_put_be64(v + 8 * n, t->feed[i + n].log_seq);
			n++;
		}
		sh_put_be64(k, device);
		sh_put_be64(k + 8, t->next_feed_seq);
		if ((r = st_put_raw(t, DB_FEED, k, 16, v, 8 * n, 0)) < 0)
			return r;
		t->next_feed_seq += n;
		i += n;
	}
	t->n_feed = 0;
	t->counters_dirty = true;
	return 0;
}

/* Feed entry k -> v of device: its first seq, items and count. 1, 0 when
 * it is not the device's, -EIO when malformed. */
static int feed_entry(uint64_t device, const MDB_val *k, const MDB_val *v, uint64_t *ret_first,
		      const uint8_t **ret_items, size_t *ret_n)
{
	if (k->mv_size != 16 || sh_get_be64(k->mv_data) != device)
		return 0;
	if (v->mv_size < 8 || v->mv_size % 8 || v->mv_size > 8 * FEED_PACK)
		return -EIO;
	*ret_first = sh_get_be64((const uint8_t *)k->mv_data + 8);
	*ret_items = v->mv_data;
	*ret_n = v->mv_size / 8;
	return 1;
}

/* Puts c on the entry of device's feed holding the first item at or after
 * feed seq pos: 1 with its first seq, items and count; 0 when there is
 * none. */
static int feed_seek(MDB_cursor *c, uint64_t device, uint64_t pos, uint64_t *ret_first,
		     const uint8_t **ret_items, size_t *ret_n)
{
	uint8_t kb[16];
	sh_put_be64(kb, device);
	sh_put_be64(kb + 8, pos);
	MDB_val k = val_of(kb, 16), v;
	int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc && rc != MDB_NOTFOUND)
		return st_lmdb_err(rc);
	if (rc == 0 && k.mv_size == 16 && !memcmp(k.mv_data, kb, 16))
		return feed_entry(device, &k, &v, ret_first, ret_items, ret_n);
	/* Not an entry starting at pos: the one before may hold it. */
	bool after = rc == 0;
	rc = mdb_cursor_get(c, &k, &v, after ? MDB_PREV : MDB_LAST);
	if (rc && rc != MDB_NOTFOUND)
		return st_lmdb_err(rc);
	int r = rc ? 0 : feed_entry(device, &k, &v, ret_first, ret_items, ret_n);
	if (r != 0 && (r < 0 || *ret_first + *ret_n > pos))
		return r;
	if (!after)
		return 0;
	if (rc == 0 && (rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) != 0)
		return st_lmdb_err(rc); /* back to the entry after pos */
	if (rc)
		rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); /* pos was before them all */
	return rc ? st_lmdb_err(rc) : feed_entry(device, &k, &v, ret_first, ret_items, ret_n);
}

/* Wide entry k -> v: its feed seq and log seq, and 1 when device is one
 * of its devices, 0 when not; -EIO when malformed. */
static int wide_entry(uint64_t device, const MDB_val *k, const MDB_val *v, uint64_t *ret_seq,
		      uint64_t *ret_log_seq)
{
	if (k->mv_size != 8 || v->mv_size < 16 || v->mv_size % 8)
		return -EIO;
	const uint8_t *p = v->mv_data;
	*ret_seq = sh_get_be64(k->mv_data);
	*ret_log_seq = sh_get_be64(p);
	size_t lo = 0, hi = v->mv_size / 8 - 1; /* devices, ascending */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t d = sh_get_be64(p + 8 * (mid + 1));
		if (d == device)
			return 1;
		if (d < device)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* The first wide entry after feed seq pos naming device, below feed seq
 * before: 1 with *ret_seq and *ret_log_seq; 0 when there is none (*ret_seq
 * the last entry read, or pos); 2 when store_opts.wide_scan entries named
 * other devices (*ret_seq the last of them): a device that holds none of
 * the widely held records reads each of their changes once (its cursor
 * moves past them), in steps of that many. */
static int wide_next(struct store_txn *t, uint64_t device, uint64_t pos, uint64_t before,
		     uint64_t *ret_seq, uint64_t *ret_log_seq)
{
	*ret_seq = pos;
	if (t->s->wide_absent || pos == UINT64_MAX)
		return 0;
	MDB_cursor *c;
	int r = st_lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_WIDE], &c));
	if (r < 0)
		return r;
	uint8_t kb[8];
	sh_put_be64(kb, pos + 1);
	MDB_val k = val_of(kb, 8), v;
	int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	for (size_t n = 0; r == 0; n++) {
		uint64_t seq, log_seq;
		if (rc) {
			r = rc == MDB_NOTFOUND ? 0 : st_lmdb_err(rc);
			break;
		}
		if ((r = wide_entry(device, &k, &v, &seq, &log_seq)) < 0)
			break;
		if (seq >= before) {
			r = 0;
			break;
		}
		*ret_seq = seq;
		if (r == 1) {
			*ret_log_seq = log_seq;
			break;
		}
		if (n + 1 == t->s->opts.wide_scan) {
			r = 2;
			break;
		}
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return r;
}

/* The next item of device's own feed after *cursor (feed.c's entries),
 * as store_feed_next. */
static int own_next(struct store_txn *t, uint64_t device, uint64_t *cursor,
		    uint64_t *ret_log_seq);

int store_feed_next(struct store_txn *t, uint64_t device, uint64_t *cursor, uint64_t *ret_log_seq)
{
	if (*cursor == UINT64_MAX)
		return 0;
	int r;
	if (t->write && (r = st_feed_flush(t)) < 0)
		return r;
	/* Its own feed and the wide entries naming it: one sequence of feed
	 * seqs, read in order. */
	uint64_t own = *cursor, own_log = 0, wide, wide_log = 0;
	int ro = own_next(t, device, &own, &own_log);
	if (ro < 0)
		return ro;
	int rw = wide_next(t, device, *cursor, ro ? own : UINT64_MAX, &wide, &wide_log);
	if (rw < 0)
		return rw;
	if (rw == 1 || rw == 2) {
		*cursor = wide;
		*ret_log_seq = wide_log;
		return rw;
	}
	if (ro) {
		*cursor = own;
		*ret_log_seq = own_log;
		return 1;
	}
	*cursor = wide; /* past the wide entries that name other devices */
	return 0;
}

static int own_next(struct store_txn *t, uint64_t device, uint64_t *cursor,
		    uint64_t *ret_log_seq)
{
	uint64_t pos = *cursor + 1, first;
	const uint8_t *items;
	size_t n;
	int r;
	if (!t->write && t->fc_items && t->fc_device == device && pos >= t->fc_first &&
	    pos - t->fc_first < t->fc_n) {
		first = t->fc_first;
		items = t->fc_items;
		n = t->fc_n;
	} else {
		MDB_cursor *c;
		if ((r = st_lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_FEED], &c))) < 0)
			return r;
		r = feed_seek(c, device, pos, &first, &items, &n);
		mdb_cursor_close(c);
		if (r <= 0)
			return r;
		if (!t->write) {
			t->fc_device = device;
			t->fc_first = first;
			t->fc_items = items;
			t->fc_n = n;
		}
	}
	size_t i = pos > first ? (size_t)(pos - first) : 0;
	*cursor = first + i;
	*ret_log_seq = sh_get_be64(items + 8 * i);
	return 1;
}

/* Items in the device's own feed after cursor. */
static int own_count(struct store_txn *t, uint64_t device, uint64_t cursor, uint64_t *ret)
{
	uint64_t n = 0, first;
	const uint8_t *items;
	size_t k;
	MDB_cursor *c;
	int r = st_lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_FEED], &c));
	if (r < 0)
		return r;
	/* The entry holding the first item after cursor, then the rest of
	 * the device's entries in order. */
	r = feed_seek(c, device, cursor + 1, &first, &items, &k);
	if (r == 1)
		n = first + k - SH_MAX(cursor + 1, first);
	while (r == 1) {
		MDB_val kv, v;
		int rc = mdb_cursor_get(c, &kv, &v, MDB_NEXT);
		r = rc ? (rc == MDB_NOTFOUND ? 0 : st_lmdb_err(rc))
		       : feed_entry(device, &kv, &v, &first, &items, &k);
		if (r == 1)
			n += k;
	}
	mdb_cursor_close(c);
	*ret = n;
	return r < 0 ? r : 0;
}

/* The index of device in ids (ascending), or n. */
static size_t find_device(const uint64_t *ids, size_t n, uint64_t device)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ids[mid] == device)
			return mid;
		if (ids[mid] < device)
			lo = mid + 1;
		else
			hi = mid;
	}
	return n;
}

/* One walk of the wide table, newest entry first, down to the lowest
 * cursor or 16 scans' worth of entries: each entry naming one of the
 * devices past its cursor counts for it. */
static int wide_count(struct store_txn *t, size_t n, const uint64_t *ids, const uint64_t *cursors,
		      uint64_t *counts)
{
	uint64_t lowest = UINT64_MAX;
	for (size_t i = 0; i < n; i++)
		lowest = SH_MIN(lowest, cursors[i]);
	if (t->s->wide_absent || lowest == UINT64_MAX)
		return 0;
	MDB_cursor *c;
	int r = st_lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_WIDE], &c));
	if (r < 0)
		return r;
	MDB_val kv, v;
	int rc = mdb_cursor_get(c, &kv, &v, MDB_LAST);
	for (size_t k = 0; !rc && k < 16 * t->s->opts.wide_scan; k++) {
		if (kv.mv_size != 8 || v.mv_size < 16 || v.mv_size % 8) {
			r = -EIO;
			break;
		}
		uint64_t seq = sh_get_be64(kv.mv_data);
		if (seq <= lowest)
			break;
		const uint8_t *p = v.mv_data;
		for (size_t j = 1; j < v.mv_size / 8; j++) {
			size_t i = find_device(ids, n, sh_get_be64(p + 8 * j));
			if (i < n && seq > cursors[i])
				counts[i]++;
		}
		rc = mdb_cursor_get(c, &kv, &v, MDB_PREV);
	}
	if (r >= 0 && rc && rc != MDB_NOTFOUND)
		r = st_lmdb_err(rc);
	mdb_cursor_close(c);
	return r;
}

int store_feed_count_many(struct store_txn *t, size_t n, const uint64_t *ids,
			  const uint64_t *cursors, uint64_t *counts)
{
	for (size_t i = 1; i < n; i++)
		if (ids[i] <= ids[i - 1])
			return -EINVAL;
	int r = t->write ? st_feed_flush(t) : 0;
	for (size_t i = 0; i < n && r >= 0; i++) {
		counts[i] = 0;
		if (cursors[i] != UINT64_MAX)
			r = own_count(t, ids[i], cursors[i], &counts[i]);
	}
	return r < 0 ? r : wide_count(t, n, ids, cursors, counts);
}

int store_feed_count(struct store_txn *t, uint64_t device, uint64_t cursor, uint64_t *ret)
{
	return store_feed_count_many(t, 1, &device, &cursor, ret);
}

int store_assign(struct store_txn *t, struct arena *a, const uint8_t record_id[16],
		 uint64_t device)
{
	/* As stored: a pointer record stays one (assigning changes no
	 * register). */
	uint64_t seq;
	uint8_t k[8];
	MDB_val v;
	int r = st_record_seq(t, record_id, &seq);
	if (r < 0)
		return r;
	sh_put_be64(k, seq);
	if ((r = st_get_raw(t, DB_RECS, k, 8, &v)) < 0)
		return r;
	merge_rec_t *rec = recpack_unpack(a, v.mv_data, v.mv_size);
	if (!rec)
		return -EIO;
	bool pointer = rec->log_seq != 0;
	if (!pointer)
		merge_rec_expand(rec);
	if (st_has_u64(rec->assigned, rec->n_assigned, device))
		return 0;
	bool writer = st_has_u64(rec->writers, rec->n_writers, device);
	uint64_t *na = arena_alloc(a, (rec->n_assigned + 1) * sizeof(*na));
	if (!na)
		return -ENOMEM;
	size_t at = 0;
	while (at < rec->n_assigned && rec->assigned[at] < device)
		at++;
	if (at)
		memcpy(na, rec->assigned, at * sizeof(*na));
	na[at] = device;
	if (rec->n_assigned > at)
		memcpy(na + at + 1, rec->assigned + at, (rec->n_assigned - at) * sizeof(*na));
	rec->assigned = na;
	rec->n_assigned++;
	r = pointer ? st_put_rec(t, k, rec, 0) : st_put_record(t, rec, false, rec->conflicts > 0);
	if (r < 0)
		return r;
	if (writer)
		return 0; /* it already holds the record's history */
	/* Give it the whole history, in log order. */
	uint64_t *hist;
	size_t n;
	if ((r = store_record_history(t, a, rec, &hist, &n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if ((r = st_feed_add(t, device, hist[i])) < 0)
			return r;
	return 0;
}
