/* store_int: what the store's own files share and nobody else sees: the
 * environment and transaction structs, the table handles and the raw
 * LMDB helpers (one error map: st_lmdb_err).
 *
 *   store.c    the environment: open, format, transactions, map growth,
 *              page release, backup, counters (the key layout is there)
 *   records.c  merged records: read (pointer records rebuilt), write,
 *              cursors, conflicts index, digest
 *   chain.c    the change log and its hash chain, a record's history
 *   feed.c     pull feeds: what each device pulls, assignment
 *   devices.c  devices, tokens, batch memos, the audit log
 *   upload.c   attachments: references, uploads, complete files
 *   daily.c    pushes per county and server day (daily.h)
 *   apply.c    the apply engine: dedupe, the holding rule, merge, log,
 *              fan-out (apply.h)
 */
#ifndef SHAHIDI_STORE_INT_H
#define SHAHIDI_STORE_INT_H

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "hlc.h"
#include "store.h"

#define ST_RC_SLOTS 16 /* records kept unpacked per transaction */

enum {
	DB_META,
	DB_RECS,
	DB_RID,
	DB_LOG,
	DB_RLOG,
	DB_CHG,
	DB_FEED,
	DB_BAT,
	DB_DEV,
	DB_TOK,
	DB_CFL,
	DB_AUDIT,
	DB_FILES,
	DB_DAYS,
	DB_WIDE,
	DB_COUNT
};

struct store {
	MDB_env *env;
	MDB_dbi dbi[DB_COUNT];
	/* Readers and writers hold it shared; growing the map holds it
	 * exclusive, since mdb_env_set_mapsize() needs no transaction open in
	 * the process. */
	pthread_rwlock_t resize_lock;
	pthread_mutex_t hlc_lock;
	uint64_t hlc_last; /* highest HLC committed by this process */
	/* Set when a write found the map full (as opposed to the disk):
	 * store_grow() then knows that growing helps. */
	_Atomic bool map_full;
	/* store_release_pages(): transactions begun so far, and where the map
	 * was when last found (it moves when it grows). */
	_Atomic uint64_t txns;
	pthread_mutex_t release_lock;
	uint64_t released_at;      /* txns at the last release */
	uintptr_t map_lo, map_hi;  /* 0, 0: not found yet */
	uintptr_t release_next;    /* store_release_if_needed: where it goes on */
	size_t map_size;
	/* Writes by other processes (the CLI), told from this process's own
	 * by their transaction ids: the last id this process committed, and
	 * how many times a write transaction found others' commits before it
	 * (store_others_writes). */
	_Atomic uint64_t own_txnid;
	_Atomic uint64_t others;
	/* The records the last write transaction kept unpacked (st_rc_*):
	 * the next one keeps them from their first change (the shared
	 * records many phones change stay hot from commit to commit). Only
	 * write transactions touch these, one at a time (LMDB's lock). */
	uint64_t rc_hot[ST_RC_SLOTS];
	size_t n_rc_hot;
	/* Write commits syncing now (store_committing: uploads yield to them). */
	_Atomic unsigned committing;
	struct store_opts opts;
	bool read_only;
	bool old_format;           /* opened a store of an older format */
	bool files_absent;         /* read-only, from before the files table */
	bool days_absent;          /* read-only, from before the days table */
	bool wide_absent;          /* read-only, from before the wide table */
	unsigned opened_format;    /* the format it had when opened; 0 = new */
	char dir[];
};

/* A feed item waiting for the end of its transaction (st_feed_add). */
struct feed_item {
	uint64_t device, log_seq;
};

/* Items per feed entry: 512 bytes, well inside a leaf node; a pull that
 * stops inside one re-reads at most this many. */
#define FEED_PACK 64

/* A change for this many devices or more is one entry of the wide table
 * (feed.c) instead of an item in each of their feeds. */
#define FEED_WIDE_MIN 8

/* A change waiting for the end of its transaction to become a wide entry:
 * its devices are wide_devs[off, off + n), ascending. */
struct wide_item {
	uint64_t log_seq;
	size_t off, n;
};

#define ST_RC_SEEN 64  /* records changed once, remembered (by seq) */

struct store_txn {
	struct store *s;
	MDB_txn *txn;
	bool write;
	bool counters_dirty;
	uint64_t next_log_seq;
	uint64_t next_record_seq;
	uint64_t next_feed_seq;
	uint64_t records;
	uint8_t head_hash[32];
	struct hlc hlc;
	MDB_cursor *log_cursor;    /* store_log_change's: lookups in seq order
				      stay on their leaf page */
	MDB_cursor *put_cursor[DB_COUNT]; /* st_put_*'s, a write transaction's:
				      opened when first used, closed before
				      it ends (store.c's put_cursor) */
	struct feed_item *feed;    /* owned; written by st_feed_flush */
	size_t n_feed, cap_feed;
	struct wide_item *wide;    /* owned; written by st_feed_flush */
	size_t n_wide, cap_wide;
	uint64_t *wide_devs;       /* owned: the wide items' devices */
	size_t n_wide_devs, cap_wide_devs;
	/* store_feed_next's last entry, in a read transaction (points into
	 * the map, valid while it lasts) */
	uint64_t fc_device, fc_first;
	const uint8_t *fc_items;
	size_t fc_n;
	uint64_t others_writes;    /* store_txn_others_writes */
	/* Records apply_change merged in this transaction more than once,
	 * kept unpacked (records.c, st_rc_*), so that a record many changes
	 * of one commit touch is read once and packed and written once: a
	 * kept record is dirty (newer than its stored bytes) until written,
	 * which happens when the transaction commits, when its slot is wanted
	 * for another record, or before anything reads the stored records
	 * (st_rc_before_read): every read sees what writing it after each
	 * change gave. In rc_arena (owned, NULL until used); dropped whenever
	 * anything else writes the record; freed with the transaction. */
	struct arena *rc_arena;
	struct {
		uint64_t seq;
		merge_rec_t *rec;
		uint64_t used;     /* rc_tick at its last use: the least
				      recently used leaves first */
		bool dirty;
	} rc[ST_RC_SLOTS];
	size_t n_rc, n_dirty;
	uint64_t rc_tick;
	size_t *pack_sizes;        /* records.c's recpack_size_keep(): owned */
	size_t cap_pack_sizes;
	merge_reg_t **own_regs;    /* records.c's put_compact(): owned */
	size_t cap_own_regs;
	uint64_t rc_seen[ST_RC_SEEN]; /* records changed once: the next change
					 of one keeps it */
	size_t n_rc_seen;
};

static inline MDB_val val_of(const void *p, size_t n)
{
	return (MDB_val){.mv_size = n, .mv_data = (void *)p};
}

int st_lmdb_err(int rc);
int st_write_err(struct store_txn *t, int rc);
int st_get_raw(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *ret);
/* A value that is one big-endian uint64 (a record's or a log entry's
 * seq, a device id): -EIO when it is anything else, as it can only be
 * if the store is damaged. */
static inline int st_val_u64(const MDB_val *v, uint64_t *ret)
{
	if (v->mv_size != 8)
		return -EIO;
	*ret = sh_get_be64(v->mv_data);
	return 0;
}
int st_get_u64(struct store_txn *t, int db, const void *key, size_t klen, uint64_t *ret);
/* mdb_put through the write transaction's own cursor for db (store.c's
 * put_cursor: the leaf page of the last put is tried first); LMDB's
 * return code. */
int st_cursor_put(struct store_txn *t, int db, MDB_val *k, MDB_val *d, unsigned flags);
int st_put_raw(struct store_txn *t, int db, const void *key, size_t klen, const void *v,
		   size_t vlen, unsigned flags);
int st_put_new(struct store_txn *t, int db, const void *key, size_t klen, const void *v,
		   size_t vlen, MDB_val *ret_old);
int st_del_raw(struct store_txn *t, int db, const void *key, size_t klen);
int st_put_concat(struct store_txn *t, int db, const void *key, size_t klen,
		      const uint8_t *head, size_t hlen, const uint8_t *tail, size_t tlen,
		      unsigned flags);
int st_put_pb(struct store_txn *t, int db, const void *key, size_t klen,
		  const ProtobufCMessage *m, unsigned flags);
int st_get_pb(struct store_txn *t, struct arena *a, int db, const void *key, size_t klen,
		  const ProtobufCMessageDescriptor *desc, void **ret);
int st_seek(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *ret_k,
		MDB_val *ret_v);
int st_next_u64_key(struct store_txn *t, int db, uint64_t *seq, MDB_val *ret_v);
int st_next_pair(struct store_txn *t, int db, uint64_t prefix, uint64_t *cursor,
		     MDB_val *ret_v);
int st_u64_push(struct arena *a, uint64_t **arr, size_t *n, size_t *cap, uint64_t v);
bool st_has_u64(const uint64_t *arr, size_t n, uint64_t v);
int st_record_by_seq(struct store_txn *t, struct arena *a, uint64_t seq, merge_rec_t **ret);
int st_record_seq(struct store_txn *t, const uint8_t id[16], uint64_t *ret);
int st_put_rec(struct store_txn *t, const uint8_t k[8], const merge_rec_t *rec, unsigned flags);
int st_put_record(struct store_txn *t, merge_rec_t *rec, bool is_new, bool had_conflict);
/* The transaction's cache of merged records (see struct store_txn).
 * st_rc_arena: the arena cached records live in (*ret NULL when out of
 * memory); it starts again empty past a size, writing the dirty ones
 * first. st_rc_get: record seq as merged last, or NULL. st_rc_put: keep
 * rec (in that arena) as seq's record, dirty when not written since its
 * last change (another record's slot may be written to make room).
 * st_rc_dirty: whether seq is kept dirty. st_rc_write: write seq's if
 * dirty. st_rc_drop: forget seq, dirty or not (its write is superseded,
 * or the transaction spoilt). st_rc_flush: write every dirty one (the
 * commit does). st_put_rec forgets what it writes. */
int st_rc_arena(struct store_txn *t, struct arena **ret);
merge_rec_t *st_rc_get(struct store_txn *t, uint64_t seq);
/* Whether seq's record is worth keeping: it is kept, was changed before
 * in this transaction, or was kept by the last one (else it is noted as
 * changed once). */
bool st_rc_wanted(struct store_txn *t, uint64_t seq);
int st_rc_put(struct store_txn *t, uint64_t seq, merge_rec_t *rec, bool dirty);
bool st_rc_dirty(const struct store_txn *t, uint64_t seq);
int st_rc_write(struct store_txn *t, uint64_t seq);
void st_rc_drop(struct store_txn *t, uint64_t seq);
int st_rc_flush(struct store_txn *t);
/* At the commit: the records kept, for the next transaction (rc_hot). */
void st_rc_remember(struct store_txn *t);
/* Before anything reads the stored records (DB_RECS) other than through
 * the cache: record key (8 bytes), or every record (key NULL: a walk).
 * Writes what the read would otherwise miss. */
static inline int st_rc_before_read(struct store_txn *t, const void *key, size_t klen)
{
	if (!t->n_dirty || (key && (klen != 8 || !st_rc_dirty(t, sh_get_be64(key)))))
		return 0;
	return st_rc_flush(t);
}
/* The conflicts index entry of record k (8 bytes), from whether it had
 * conflicts before its change to whether it has now. */
int st_note_conflicts(struct store_txn *t, const uint8_t k[8], bool had, bool has);
int st_feed_add(struct store_txn *t, uint64_t device, uint64_t log_seq);
/* Change log_seq to every device of writers and assigned (duplicates
 * allowed) but origin and pusher: a feed item each, or one wide entry for
 * FEED_WIDE_MIN devices or more. */
int st_feed_fanout(struct store_txn *t, uint64_t log_seq, uint64_t origin, uint64_t pusher,
		   const uint64_t *writers, size_t n_writers, const uint64_t *assigned,
		   size_t n_assigned);
int st_feed_flush(struct store_txn *t);
/* A change's log entry: the part prepared off the writer's thread
 * (LogEntry fields 2, 3, 5, 7: apply_prepare) and what only the writer
 * knows. Appended with its chain link (chain.c). */
struct st_log_append {
	const uint8_t *prefix;
	size_t prefix_len;
	uint64_t pusher, batch_seq;
	const uint8_t *digest; /* 32 bytes: BLAKE2b-256 of the change */
	uint64_t log_seq, record_seq, prev, now_ms;
};
int st_append_log(struct store_txn *t, const struct st_log_append *e);

#endif
