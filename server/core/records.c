/* records: the merged records, read and written (see store_int.h). */
#include "store_int.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>


#include "arena.h"
#include "common.h"
#include "recpack.h"
#include "wire.h"

/* A write's register as a sort key: the record's own fields first, then
 * instances by id (big-endian halves compare as memcmp does), then by
 * field (merge_reg_cmp()). */
struct write_key {
	uint64_t hi, lo;
	uint32_t field;
	bool inst;
};

static struct write_key write_key(const struct wire_write *w)
{
	struct write_key k = {.field = w->field, .inst = w->instance_len == 16};
	if (k.inst) {
		k.hi = sh_get_be64(w->instance);
		k.lo = sh_get_be64(w->instance + 8);
	}
	return k;
}

static bool key_after(const struct write_key *x, const struct write_key *y)
{
	if (x->inst != y->inst)
		return x->inst;
	if (x->hi != y->hi)
		return x->hi > y->hi;
	if (x->lo != y->lo)
		return x->lo > y->lo;
	return x->field > y->field;
}

/* The registers the change in log entry log_seq makes of nothing: one per
 * write, one entry each (encode_new_record's record), sorted by (instance,
 * field) as registers are kept; its origin and change id. The change is
 * copied: its bytes in the map may move when this transaction writes. 0;
 * 1 with none when the change was erased; or an error. */
static int base_registers(struct store_txn *t, struct arena *a, uint64_t log_seq,
			  merge_reg_t ***ret, size_t *ret_n, uint64_t *ret_origin,
			  uint64_t *ret_change_id)
{
	const uint8_t *chg;
	size_t len;
	uint64_t pusher;
	struct wire_change c;
	int r = store_log_change(t, a, log_seq, &chg, &len, &pusher);
	if (r < 0)
		return r == -ENOENT ? -EIO : r;
	if (!len) { /* erased (erase.c): nothing of it is left */
		*ret = NULL;
		*ret_n = 0;
		*ret_origin = *ret_change_id = 0;
		return 1;
	}
	uint8_t *copy = arena_memdup(a, chg, len);
	if (!copy)
		return -ENOMEM;
	if ((r = wire_read_change(a, a, SIZE_MAX, SIZE_MAX, copy, len, &c)) < 0)
		return r == -ENOMEM ? r : -EIO;
	if (c.has_deletion)
		return -EIO; /* never in a record's first change */
	uint64_t origin = c.origin ? c.origin : pusher;
	size_t n = c.n_fields;
	uint16_t *order = arena_alloc(a, (n + 1) * sizeof(*order));
	struct write_key *keys = arena_alloc(a, (n + 1) * sizeof(*keys));
	merge_reg_t *regs = arena_alloc(a, (n + 1) * sizeof(*regs));
	merge_reg_t **rp = arena_alloc(a, (n + 1) * sizeof(*rp));
	merge_entry_t *es = arena_alloc(a, (n + 1) * sizeof(*es));
	merge_entry_t **ep = arena_alloc(a, (n + 1) * sizeof(*ep));
	if (!order || !keys || !regs || !rp || !es || !ep)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t m = i; /* by (instance, field), as registers are kept */
		keys[i] = write_key(&c.fields[i]);
		while (m > 0 && key_after(&keys[order[m - 1]], &keys[i])) {
			order[m] = order[m - 1];
			m--;
		}
		order[m] = (uint16_t)i;
	}
	static const merge_reg_t reg_init = SHAHIDI__STORE__V1__REGISTER__INIT;
	static const merge_entry_t entry_init = SHAHIDI__STORE__V1__ENTRY__INIT;
	for (size_t i = 0; i < n; i++) {
		const struct wire_write *w = &c.fields[order[i]];
		es[i] = entry_init;
		es[i].device = origin;
		es[i].hlc = w->hlc ? w->hlc : c.hlc; /* as prepare_change */
		es[i].seq = c.change_id;
		es[i].value.data = (uint8_t *)w->value;
		es[i].value.len = w->value_len;
		ep[i] = &es[i];
		regs[i] = reg_init;
		regs[i].field = w->field;
		if (w->instance_len == 16) {
			regs[i].instance.data = (uint8_t *)w->instance;
			regs[i].instance.len = 16;
		}
		regs[i].n_entries = 1;
		regs[i].entries = &ep[i];
		rp[i] = &regs[i];
	}
	*ret = rp;
	*ret_n = n;
	*ret_origin = origin;
	*ret_change_id = c.change_id;
	return 0;
}

/* A stored record, unpacked into a: a pointer record (Record.log_seq) is
 * rebuilt from the change it points to, an edited one that keeps its first
 * change's registers in the log (Record.base_log_seq) has them put back
 * under its own; then either looks like any other. */
static int record_unpack(struct store_txn *t, struct arena *a, const MDB_val *v,
			 merge_rec_t **ret)
{
	merge_rec_t *rec = recpack_unpack(a, v->mv_data, v->mv_size);
	if (!rec)
		return -EIO; /* our own bytes do not decode: corruption */
	merge_reg_t **base;
	size_t n;
	uint64_t origin, change_id;
	int r;
	if (rec->log_seq) {
		if ((r = base_registers(t, a, rec->log_seq, &base, &n, &origin, &change_id)) < 0)
			return r;
		rec->registers = base;
		rec->n_registers = n;
		rec->head_log_seq = rec->log_seq; /* its only change */
		/* written back as an edit of that change: st_put_record */
		rec->base_log_seq = rec->log_seq;
		rec->base_origin = origin;
		rec->base_change_id = change_id;
		rec->log_seq = 0;
	} else if (rec->base_log_seq) {
		if ((r = base_registers(t, a, rec->base_log_seq, &base, &n, &origin, &change_id)) < 0)
			return r;
		if (r == 0 && (origin != rec->base_origin || change_id != rec->base_change_id))
			return -EIO; /* it names another change than its own first */
		/* both sorted: the stored register wins over the rebuilt one */
		size_t m = rec->n_registers, i = 0, j = 0, k = 0;
		merge_reg_t **all = arena_alloc(a, (n + m + 1) * sizeof(*all));
		if (!all)
			return -ENOMEM;
		while (i < n || j < m) {
			int c = i == n ? 1 : -1;
			if (i < n && j < m) {
				const merge_reg_t *g = rec->registers[j];
				c = merge_reg_cmp(base[i], g->instance.len ? g->instance.data : NULL,
						  g->field);
			}
			if (c < 0) {
				all[k++] = base[i++];
			} else {
				all[k++] = rec->registers[j++];
				i += c == 0;
			}
		}
		/* expanded apart: the rebuilt entries carry their stamps */
		merge_rec_expand(rec);
		rec->registers = all;
		rec->n_registers = k;
		*ret = rec;
		return 0;
	}
	merge_rec_expand(rec);
	*ret = rec;
	return 0;
}

int st_record_by_seq(struct store_txn *t, struct arena *a, uint64_t seq, merge_rec_t **ret)
{
	uint8_t k[8];
	MDB_val v;
	sh_put_be64(k, seq);
	int r = st_get_raw(t, DB_RECS, k, 8, &v);
	return r < 0 ? r : record_unpack(t, a, &v, ret);
}

int st_record_seq(struct store_txn *t, const uint8_t id[16], uint64_t *ret)
{
	return st_get_u64(t, DB_RID, id, 16, ret);
}

int store_record_get(struct store_txn *t, struct arena *a, const uint8_t id[16],
		     merge_rec_t **ret)
{
	uint64_t seq;
	int r = st_record_seq(t, id, &seq);
	return r < 0 ? r : st_record_by_seq(t, a, seq, ret);
}

int store_record_next(struct store_txn *t, struct arena *a, uint64_t *seq, merge_rec_t **ret)
{
	MDB_val v;
	uint64_t s = *seq;
	int r = st_next_u64_key(t, DB_RECS, &s, &v);
	if (r <= 0)
		return r;
	if ((r = record_unpack(t, a, &v, ret)) < 0)
		return r;
	*seq = s;
	return 1;
}

struct store_cursor {
	MDB_cursor *c;
	uint64_t after;
	bool started;
};

int store_records_cursor(struct store_txn *t, uint64_t after_seq, struct store_cursor **ret)
{
	int r = st_rc_before_read(t, NULL, 0); /* a walk */
	if (r < 0)
		return r;
	struct store_cursor *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -ENOMEM;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_RECS], &sc->c);
	if (rc) {
		free(sc);
		return st_lmdb_err(rc);
	}
	sc->after = after_seq;
	*ret = sc;
	return 0;
}

int store_cursor_next(struct store_cursor *sc, uint64_t *ret_seq, const uint8_t **ret_data,
		      size_t *ret_len)
{
	MDB_val k, v;
	int rc;
	if (!sc->started) {
		uint8_t kb[8];
		if (sc->after == UINT64_MAX)
			return 0;
		sh_put_be64(kb, sc->after + 1);
		k = val_of(kb, 8);
		rc = mdb_cursor_get(sc->c, &k, &v, MDB_SET_RANGE);
		sc->started = true;
	} else {
		rc = mdb_cursor_get(sc->c, &k, &v, MDB_NEXT);
	}
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return st_lmdb_err(rc);
	if (k.mv_size != 8)
		return -EIO;
	*ret_seq = sh_get_be64(k.mv_data);
	*ret_data = v.mv_data;
	*ret_len = v.mv_size;
	return 1;
}

void store_cursor_close(struct store_cursor *sc)
{
	if (!sc)
		return;
	mdb_cursor_close(sc->c);
	free(sc);
}

int store_conflict_next(struct store_txn *t, struct arena *a, uint64_t *seq, merge_rec_t **ret)
{
	MDB_val v;
	uint64_t s = *seq;
	int r = st_next_u64_key(t, DB_CFL, &s, &v);
	if (r <= 0)
		return r;
	if ((r = st_record_by_seq(t, a, s, ret)) < 0)
		return r == -ENOENT ? -EIO : r;
	*seq = s;
	return 1;
}

int store_records_digest(struct store_txn *t, struct arena *a, uint8_t out[32],
			 uint64_t *ret_records)
{
	MDB_cursor *c;
	MDB_val k, v;
	crypto_generichash_state st;
	uint64_t n = 0;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_RID], &c);
	if (rc)
		return st_lmdb_err(rc);
	crypto_generichash_init(&st, NULL, 0, 32);
	int r = 0;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		merge_rec_t *rec;
		uint8_t d[32];
		uint64_t seq;
		if ((r = st_val_u64(&v, &seq)) < 0 || (r = st_record_by_seq(t, a, seq, &rec)) < 0)
			break;
		merge_digest(rec, d);
		crypto_generichash_update(&st, d, 32);
		arena_reset(a);
		n++;
	}
	mdb_cursor_close(c);
	if (r == 0 && rc != MDB_NOTFOUND)
		r = st_lmdb_err(rc);
	if (r < 0)
		return r == -ENOENT ? -EIO : r;
	crypto_generichash_final(&st, out, 32);
	*ret_records = n;
	return 0;
}

/* ---- log ---- */

/* ---- the transaction's merged records ---- */

/* Past this much memory the cache starts again empty: a long transaction
 * (a rebuild, a big group commit) must not grow without bound. */
#define RC_MAX_BYTES ((size_t)16 << 20)

int st_rc_arena(struct store_txn *t, struct arena **ret)
{
	if (t->rc_arena && arena_used(t->rc_arena) > RC_MAX_BYTES) {
		int r = st_rc_flush(t);
		if (r < 0)
			return r;
		arena_reset(t->rc_arena); /* every cached record with it */
		t->n_rc = 0;
	}
	if (!t->rc_arena)
		t->rc_arena = arena_new();
	*ret = t->rc_arena;
	return 0;
}

static size_t rc_find(const struct store_txn *t, uint64_t seq)
{
	size_t i = 0;
	while (i < t->n_rc && t->rc[i].seq != seq)
		i++;
	return i;
}

merge_rec_t *st_rc_get(struct store_txn *t, uint64_t seq)
{
	size_t i = rc_find(t, seq);
	if (i == t->n_rc)
		return NULL;
	t->rc[i].used = ++t->rc_tick;
	return t->rc[i].rec;
}

bool st_rc_dirty(const struct store_txn *t, uint64_t seq)
{
	size_t i = rc_find(t, seq);
	return i < t->n_rc && t->rc[i].dirty;
}

bool st_rc_wanted(struct store_txn *t, uint64_t seq)
{
	if (st_rc_get(t, seq) || st_has_u64(t->s->rc_hot, t->s->n_rc_hot, seq))
		return true;
	size_t n = t->n_rc_seen < ST_RC_SEEN ? t->n_rc_seen : ST_RC_SEEN;
	for (size_t i = 0; i < n; i++)
		if (t->rc_seen[i] == seq)
			return true;
	t->rc_seen[t->n_rc_seen++ % ST_RC_SEEN] = seq; /* the oldest goes */
	return false;
}

/* Whether g is still what the record's first change made of it
 * (base_registers): that write's one entry, nothing since. Such a register
 * is not stored: it is rebuilt from the change. */
static bool from_base(const merge_rec_t *rec, const merge_reg_t *g)
{
	if (g->n_entries != 1 || g->n_tombstones)
		return false;
	const merge_entry_t *e = g->entries[0];
	return e->device == rec->base_origin && e->seq == rec->base_change_id && !e->dead &&
	       !e->pending && !e->orig_hlc && !e->n_seen;
}

static int pack_put(struct store_txn *t, const uint8_t k[8], merge_rec_t *rec, unsigned flags);

/* Packs rec straight into LMDB's page, in its stored form: an edited
 * record whose first change is in the log (base_log_seq) without the
 * registers that change still holds as it made them (Record.base_log_seq);
 * any other in full. */
static int put_compact(struct store_txn *t, const uint8_t k[8], merge_rec_t *rec,
		       unsigned flags)
{
	if (!rec->base_log_seq || rec->erased_ms) {
		rec->base_log_seq = rec->base_origin = rec->base_change_id = 0;
		return pack_put(t, k, rec, flags);
	}
	/* the registers to store, for the time of the packing */
	if (rec->n_registers > t->cap_own_regs) {
		size_t cap = rec->n_registers < 64 ? 64 : 2 * rec->n_registers;
		merge_reg_t **more = realloc(t->own_regs, cap * sizeof(*more));
		if (!more)
			return -ENOMEM;
		t->own_regs = more;
		t->cap_own_regs = cap;
	}
	size_t n = 0;
	for (size_t i = 0; i < rec->n_registers; i++)
		if (!from_base(rec, rec->registers[i]))
			t->own_regs[n++] = rec->registers[i];
	merge_reg_t **all = rec->registers;
	size_t n_all = rec->n_registers;
	rec->registers = t->own_regs;
	rec->n_registers = n;
	int r = pack_put(t, k, rec, flags);
	rec->registers = all;
	rec->n_registers = n_all;
	return r;
}

/* rec's bytes, in its stored form (entries' stamps against the record's
 * base: merge_rec_compact), straight into LMDB's page, each register
 * sized once (in the transaction's t->pack_sizes). */
static int pack_put(struct store_txn *t, const uint8_t k[8], merge_rec_t *rec, unsigned flags)
{
	size_t need = recpack_sizes_len(rec);
	if (need > t->cap_pack_sizes) {
		size_t cap = need < 256 ? 256 : 2 * need;
		size_t *more = realloc(t->pack_sizes, cap * sizeof(*more));
		if (!more)
			return -ENOMEM;
		t->pack_sizes = more;
		t->cap_pack_sizes = cap;
	}
	merge_rec_compact(rec);
	MDB_val key = val_of(k, 8), d = {.mv_size = recpack_size_keep(rec, t->pack_sizes)};
	int r = st_write_err(t, st_cursor_put(t, DB_RECS, &key, &d, flags | MDB_RESERVE));
	if (r == 0)
		recpack_pack_sized(rec, t->pack_sizes, d.mv_data);
	merge_rec_expand(rec);
	return r;
}

/* Writes slot i's record if dirty. */
static int rc_write_slot(struct store_txn *t, size_t i)
{
	uint8_t k[8];
	if (!t->rc[i].dirty)
		return 0;
	sh_put_be64(k, t->rc[i].seq);
	int r = put_compact(t, k, t->rc[i].rec, 0);
	if (r < 0)
		return r;
	t->rc[i].dirty = false;
	t->n_dirty--;
	return 0;
}

int st_rc_write(struct store_txn *t, uint64_t seq)
{
	size_t i = rc_find(t, seq);
	return i < t->n_rc ? rc_write_slot(t, i) : 0;
}

int st_rc_flush(struct store_txn *t)
{
	for (size_t i = 0; i < t->n_rc && t->n_dirty; i++) {
		int r = rc_write_slot(t, i);
		if (r < 0)
			return r;
	}
	return 0;
}

void st_rc_remember(struct store_txn *t)
{
	for (size_t i = 0; i < t->n_rc; i++)
		t->s->rc_hot[i] = t->rc[i].seq;
	t->s->n_rc_hot = t->n_rc;
}

void st_rc_drop(struct store_txn *t, uint64_t seq)
{
	size_t i = rc_find(t, seq);
	if (i == t->n_rc)
		return;
	t->n_dirty -= t->rc[i].dirty;
	t->rc[i] = t->rc[--t->n_rc];
}

int st_rc_put(struct store_txn *t, uint64_t seq, merge_rec_t *rec, bool dirty)
{
	size_t i = rc_find(t, seq);
	if (i == t->n_rc) {
		if (t->n_rc < ST_RC_SLOTS) {
			t->n_rc++;
		} else {
			/* full: the least recently used one goes, written first */
			i = 0;
			for (size_t k = 1; k < ST_RC_SLOTS; k++)
				if (t->rc[k].used < t->rc[i].used)
					i = k;
			int r = rc_write_slot(t, i);
			if (r < 0)
				return r;
		}
		t->rc[i].seq = seq;
		t->rc[i].dirty = false;
	}
	t->rc[i].rec = rec;
	t->rc[i].used = ++t->rc_tick;
	if (dirty && !t->rc[i].dirty) {
		t->rc[i].dirty = true;
		t->n_dirty++;
	}
	return 0;
}

/* Packs rec straight into LMDB's page. */
int st_put_rec(struct store_txn *t, const uint8_t k[8], const merge_rec_t *rec, unsigned flags)
{
	MDB_val key = val_of(k, 8), d = {.mv_size = recpack_size(rec)};
	st_rc_drop(t, sh_get_be64(k)); /* whoever keeps it puts it back */
	int r = st_write_err(t, st_cursor_put(t, DB_RECS, &key, &d, flags | MDB_RESERVE));
	if (r < 0)
		return r;
	recpack_pack(rec, d.mv_data);
	return 0;
}

int st_note_conflicts(struct store_txn *t, const uint8_t k[8], bool had, bool has)
{
	if (has && !had)
		return st_put_raw(t, DB_CFL, k, 8, "", 0, 0);
	if (!has && had)
		return st_del_raw(t, DB_CFL, k, 8);
	return 0;
}

int st_put_record(struct store_txn *t, merge_rec_t *rec, bool is_new, bool had_conflict)
{
	uint8_t k[8];
	sh_put_be64(k, rec->seq);
	st_rc_drop(t, rec->seq); /* whoever keeps it puts it back */
	int r = put_compact(t, k, rec, is_new ? MDB_APPEND : 0);
	return r < 0 ? r : st_note_conflicts(t, k, had_conflict, rec->conflicts > 0);
}

int store_record_replace(struct store_txn *t, merge_rec_t *rec)
{
	uint8_t k[8];
	MDB_val v;
	sh_put_be64(k, rec->seq);
	int r = st_get_raw(t, DB_CFL, k, 8, &v);
	if (r < 0 && r != -ENOENT)
		return r;
	return st_put_record(t, rec, false, r == 0);
}
