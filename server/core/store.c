/* store: Shahidi's LMDB store.
 *
 * ON-DISK FORMAT, version 8 (STORE_FORMAT_VERSION). One LMDB environment
 * (data.mdb, lock.mdb) in the data directory, mode 0700, files 0600. Named
 * databases; integers in keys are big-endian so keys sort numerically;
 * values marked (pb) are shahidi.store.v1 messages (proto/store.proto).
 *
 *   db    key                                   value
 *   meta  "format"                              decimal text, "8"
 *   meta  "counters"                            Counters (pb)
 *   recs  be64 record seq                       Record (pb): merged state, or
 *                                               a pointer to the one change
 *                                               that made it (Record.log_seq),
 *                                               or the registers edited since
 *                                               that change (base_log_seq,
 *                                               format 8)
 *   rid   16-byte record id                     be64 record seq
 *   log   be64 log seq                          LogEntry (pb): change as received,
 *                                               a large one zstd-compressed
 *                                               when smaller (format 7)
 *   rlog  be64 record seq | be64 log seq        empty: a record's history, as
 *                                               formats 1 and 2 kept it (see
 *                                               below); no longer written
 *   chg   be64 origin device | be64 change id   be64 log seq: change dedupe
 *   feed  be64 device | be64 feed seq           be64 log seqs, 1 to FEED_PACK:
 *                                               what a device pulls; the
 *                                               i-th has feed seq key + i
 *   wide  be64 feed seq                         be64 log seq | be64 devices,
 *                                               ascending: a change for
 *                                               FEED_WIDE_MIN devices or
 *                                               more, once (format 6)
 *   bat   be64 device | be64 batch seq          BatchMemo (pb): batch dedupe
 *   dev   be64 device id                        Device (pb)
 *   tok   32-byte BLAKE2b-256 of a token        be64 device id
 *   cfl   be64 record seq                       empty: records with open conflicts
 *   audit be64 audit seq                        JSON text: who exported or changed
 *                                               what at the office, and when
 *   files 'r' | 16-byte file id |               record id (16) | SHA-256 (32) |
 *           be64 record seq | be32 field        be64 size | be64 pushing device |
 *                                               be64 ms noted | media type text:
 *                                               an Attachment value a change
 *                                               wrote (upload.c)
 *         'u' | 16-byte file id                 SHA-256 (32) | be64 length |
 *                                               be64 offset on disk | be64 device |
 *                                               be64 created ms | be64 expires ms |
 *                                               media type: an upload in progress
 *         'h' | 32-byte SHA-256                 be64 size | be64 received ms |
 *                                               be64 device | file id (16): a
 *                                               complete file, in
 *                                               DATA/files/sha256/<hex>
 *         'g' | 16-byte file id                 be64 ms erased: every record
 *                                               that named it was erased (410)
 *         (erasure drops a record's 'r' entries, and the 'u' and 'h' entries
 *         no record left names: upload_erase_record)
 *         (added without a format change: a store without the table reads
 *         as having no files, and gets it when opened to write)
 *   days  county (3 bytes, zeros for a phone  be64 batches | be64 changes
 *         without one) | be32 server day      applied | be64 changes rejected:
 *         (UTC days since 1970)               pushes per county and day, counted
 *                                             in the push's own transaction
 *                                             (daily.c); a replayed batch is not
 *                                             counted again
 *         (added without a format change, as files: a store without it
 *         reads as having no counts; pushes from before it are not counted)
 *
 * Why this layout (shared/reference/performance.md): a durable commit costs
 * the write-back of every page it dirties. Records, log entries and feed
 * entries are keyed by sequence numbers given in arrival order, so a commit
 * of new reports appends to the right edge of each tree instead of
 * dirtying one random leaf page per report. Only the id index (rid) is
 * keyed by the phone's UUID; version 7 UUIDs keep that near the right edge
 * too.
 *
 * A report is stored once: nearly every record is one change that made it
 * and nothing since, so its record holds only ids and receipt metadata and
 * names its log entry (Record.log_seq); readers rebuild the registers from
 * that change, and the first edit writes the record in full. This halves
 * the bytes a durable commit of new reports writes (format 2; format 1
 * stores, without pointer records, are read as they are).
 *
 * A record's history (format 3) is a chain through the log: each entry
 * names the record's previous change (LogEntry.prev_log_seq) and a record
 * written in full names its newest (Record.head_log_seq; a pointer
 * record's log_seq is its only change). Formats 1 and 2 kept an index
 * (rlog) with a random-position insert per edit, a sixth insert per
 * report; what a store holds of it from before is still read.
 *
 * Feeds (format 3): a change to a record held by many devices goes to each
 * of their feeds. One entry per change and device made an edit of a record
 * shared by 64 phones cost 63 B-tree inserts; the writer now gathers a
 * transaction's feed items and writes one entry per device with up to
 * FEED_PACK of them (feed seqs stay one per item, so a pull can stop
 * inside an entry and cursors mean what they meant). Format 2 stores,
 * whose entries hold one item each, are read as they are.
 *
 * Format 4 (the merge of merge.h: stamps kept as sent, a device's writes
 * ordered by change id, tombstones, deletions' views, repeat-group
 * instances) keeps per entry its change id and view, per register its
 * tombstones and instance. Stores of formats 1 to 3 are read as they are
 * and marked 4 by the first program that opens them to write, which then
 * merges their records again from the log (rebuild.h).
 *
 * Format 5 adds pointer records of creates that carry repeat-group
 * instances (a v3 report whose instances are all new): records.c rebuilds
 * them with their instances. A release of format 4 would rebuild them
 * without, silently, so the number changes: it refuses the store instead.
 * A format 4 store holds no such record: it is marked 5 when first opened
 * to write, and nothing is merged again (STORE_FORMAT_REBUILD_BELOW).
 *
 * Format 6 adds the wide table. A change to a record that many devices
 * hold (FEED_WIDE_MIN or more besides its sender) went to each of their
 * feeds: 63 inserts at 63 places in the feed tree for a record 64 phones
 * share, and in a commit holding a few such edits most of the feed's
 * branch pages written again (at half the saturated rate, 3% of changes
 * being such edits made the server write 5.2-5.5 GB instead of 3.8 for
 * 1.18M changes; 4.1 GB with the wide table). Such a change is now
 * one entry appended to the wide table, naming its devices; a device's
 * pull reads its feed and the wide entries naming it, merged by feed seq
 * (one sequence for both, so cursors mean what they meant). A release of
 * format 5 would not read the wide table and would lose those changes
 * from pulls: it refuses a format 6 store instead. Format 5 stores hold
 * no wide entry: they are marked 6 when first opened to write.
 *
 * Format 7 keeps a change of ZCHANGE_FROM bytes or more in the log as one
 * zstd frame (LogEntry.change_zstd, zchange.h) when that is smaller: such
 * an entry is over LMDB's largest node and took a 4 KB overflow page of its
 * own (42% of the entries of a fleet's v3 reports with repeat groups). A
 * release of format 6 would read such an entry as an empty
 * change (an erased one, to it): it refuses a format 7 store instead.
 * Format 6 stores are marked 7 when first opened to write; their entries
 * stay as they are and are read as before.
 *
 * Format 8 extends the pointer record to edited records. The first edit of
 * a report wrote the whole record (a v3 report with its instances: 2.3 KB
 * on average, most over LMDB's largest node and so on a 4 KB page of its
 * own), and so did every edit after it. Now a record whose first change
 * made it from nothing (a pointer record once) stores only the registers
 * that are no longer what that change made of them, and names the change
 * (Record.base_log_seq, with its origin and change id, checked when read):
 * readers rebuild the others from the log as for a pointer record, the
 * stored register winning over the rebuilt one of the same (instance,
 * field) (records.c; recpack_pointer() and recpack_holds() for those that
 * read records in place: export, the status page). On the groups mix this
 * wrote 22-24% fewer bytes a change (2,264 against 2,990 B in process,
 * 2,732-2,766 against 3,557-3,577 over HTTP). An erased record, and one
 * merged again from its history (rebuild.c), is written in full. A release
 * of format 7 would read such a record as holding only its edited
 * registers: it refuses a format 8 store instead. Format 7 stores are
 * marked 8 when first opened to write; their records are read as they are
 * (one written in full stays so; a pointer record's first edit gives the
 * new form).
 *
 * Hash chain: each log entry's hash is BLAKE2b-256 of
 *   prev hash (32 zero bytes for entry 1) | be64 seq | be64 received_ms |
 *   be64 device | be64 batch_seq | be64 record_seq | change_digest
 * where change_digest is BLAKE2b-256 of the change as received. The chain
 * covers the digest, not the bytes, so that erasing a survivor's data on
 * request can later drop the content and keep the chain verifiable.
 */
#include "store_int.h"


#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "arena.h"
#include "common.h"
#include "upload.h"

static const char *const db_names[DB_COUNT] = {
	"meta", "recs", "rid", "log", "rlog", "chg", "feed", "bat", "dev", "tok", "cfl", "audit", "files",
	"days", "wide",
};

typedef Shahidi__Store__V1__Counters counters_t;

/* The one place LMDB's codes become ours. */
int st_lmdb_err(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
	case ENOSPC:
		return -ENOSPC;
	case MDB_READERS_FULL:
		return -EAGAIN;
	case ENOMEM:
		return -ENOMEM;
	case EACCES:
		return -EACCES;
	default:
		return rc > 0 ? -rc : -EIO;
	}
}

/* Write errors: as st_lmdb_err(), remembering a full map. */
int st_write_err(struct store_txn *t, int rc)
{
	if (rc == MDB_MAP_FULL)
		t->s->map_full = true;
	return st_lmdb_err(rc);
}

/* The records kept unpacked in a write transaction (records.c): written
 * before the stored records are read (so that a read sees every change
 * merged so far), forgotten when the stored record is written over. */
static inline int recs_read(struct store_txn *t, int db, const void *key, size_t klen)
{
	return db == DB_RECS ? st_rc_before_read(t, key, klen) : 0;
}

static inline void recs_written(struct store_txn *t, int db, const void *key, size_t klen)
{
	if (db == DB_RECS && t->n_rc && klen == 8)
		st_rc_drop(t, sh_get_be64(key));
}

int st_get_raw(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *ret)
{
	MDB_val k = val_of(key, klen);
	int r = recs_read(t, db, key, klen);
	return r < 0 ? r : st_lmdb_err(mdb_get(t->txn, t->s->dbi[db], &k, ret));
}

int st_get_u64(struct store_txn *t, int db, const void *key, size_t klen, uint64_t *ret)
{
	MDB_val v;
	int r = st_get_raw(t, db, key, klen, &v);
	return r < 0 ? r : st_val_u64(&v, ret);
}

/* The transaction's cursor for puts into db. mdb_put descends from the
 * root every time; a cursor that stays open keeps its leaf page, and
 * LMDB checks that page first (mdb_cursor_set), or for MDB_APPEND starts
 * from the last leaf it is already on: the log's appends, a device's
 * change ids in order and a batch's new records stay on one page. Every
 * put and delete of the transaction goes through it (st_del_raw too), so
 * no other cursor moves its page from under it. Closed by
 * close_put_cursors before the transaction ends. */
static int put_cursor(struct store_txn *t, int db, MDB_cursor **ret)
{
	int rc = 0;
	if (!t->put_cursor[db] && (rc = mdb_cursor_open(t->txn, t->s->dbi[db], &t->put_cursor[db])))
		t->put_cursor[db] = NULL;
	*ret = t->put_cursor[db];
	return rc; /* LMDB's code, as mdb_put's */
}

static void close_put_cursors(struct store_txn *t)
{
	for (int i = 0; i < DB_COUNT; i++) {
		if (t->put_cursor[i])
			mdb_cursor_close(t->put_cursor[i]);
		t->put_cursor[i] = NULL;
	}
}

int st_cursor_put(struct store_txn *t, int db, MDB_val *k, MDB_val *d, unsigned flags)
{
	MDB_cursor *c = NULL;
	int rc = put_cursor(t, db, &c);
	return rc ? rc : mdb_cursor_put(c, k, d, flags);
}

int st_put_raw(struct store_txn *t, int db, const void *key, size_t klen, const void *v,
		   size_t vlen, unsigned flags)
{
	MDB_val k = val_of(key, klen), d = val_of(v, vlen);
	recs_written(t, db, key, klen);
	return st_write_err(t, st_cursor_put(t, db, &k, &d, flags));
}

/* Puts key -> v unless key is there: 0 put, 1 with *ret_old the value
 * already there. One descent of the tree where a get and a put took two. */
int st_put_new(struct store_txn *t, int db, const void *key, size_t klen, const void *v,
		   size_t vlen, MDB_val *ret_old)
{
	MDB_val k = val_of(key, klen), d = val_of(v, vlen);
	int r = recs_read(t, db, key, klen); /* it reads what is there */
	if (r < 0)
		return r;
	int rc = st_cursor_put(t, db, &k, &d, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		*ret_old = d;
		return 1;
	}
	return st_write_err(t, rc);
}

int st_del_raw(struct store_txn *t, int db, const void *key, size_t klen)
{
	MDB_val k = val_of(key, klen), d;
	MDB_cursor *c = NULL;
	recs_written(t, db, key, klen);
	int rc = put_cursor(t, db, &c); /* see put_cursor */
	if (rc == 0 && (rc = mdb_cursor_get(c, &k, &d, MDB_SET)) == 0)
		rc = mdb_cursor_del(c, 0);
	int r = st_write_err(t, rc);
	return r == -ENOENT ? 0 : r;
}

/* Puts head + tail (a prepared part and fields appended to it: protobuf
 * takes fields in any order) straight into LMDB's page. */
int st_put_concat(struct store_txn *t, int db, const void *key, size_t klen,
		      const uint8_t *head, size_t hlen, const uint8_t *tail, size_t tlen,
		      unsigned flags)
{
	MDB_val k = val_of(key, klen), d = {.mv_size = hlen + tlen};
	recs_written(t, db, key, klen);
	int r = st_write_err(t, st_cursor_put(t, db, &k, &d, flags | MDB_RESERVE));
	if (r < 0)
		return r;
	memcpy(d.mv_data, head, hlen);
	memcpy((uint8_t *)d.mv_data + hlen, tail, tlen);
	return 0;
}

/* Packs a message straight into LMDB's page: no intermediate copy. */
int st_put_pb(struct store_txn *t, int db, const void *key, size_t klen,
		  const ProtobufCMessage *m, unsigned flags)
{
	MDB_val k = val_of(key, klen), d;
	d.mv_size = protobuf_c_message_get_packed_size(m);
	recs_written(t, db, key, klen);
	int r = st_write_err(t, st_cursor_put(t, db, &k, &d, flags | MDB_RESERVE));
	if (r < 0)
		return r;
	protobuf_c_message_pack(m, d.mv_data);
	return 0;
}

int st_get_pb(struct store_txn *t, struct arena *a, int db, const void *key, size_t klen,
		  const ProtobufCMessageDescriptor *desc, void **ret)
{
	MDB_val v;
	int r = st_get_raw(t, db, key, klen, &v);
	if (r < 0)
		return r;
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, arena_pb_allocator(a), v.mv_size,
							 v.mv_data);
	if (!m)
		return -EIO; /* our own bytes do not decode: corruption */
	*ret = m;
	return 0;
}

/* ---- opening ---- */

/* Positions on the first key >= key in db; 1 found, 0 none. */
int st_seek(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *ret_k,
		MDB_val *ret_v)
{
	MDB_cursor *c;
	int r = recs_read(t, db, NULL, 0); /* a walk */
	if (r < 0)
		return r;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
	if (rc)
		return st_lmdb_err(rc);
	*ret_k = val_of(key, klen);
	rc = mdb_cursor_get(c, ret_k, ret_v, MDB_SET_RANGE);
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc ? st_lmdb_err(rc) : 1;
}

int st_next_u64_key(struct store_txn *t, int db, uint64_t *seq, MDB_val *ret_v)
{
	uint8_t kb[8];
	MDB_val k;
	if (*seq == UINT64_MAX)
		return 0;
	sh_put_be64(kb, *seq + 1);
	int r = st_seek(t, db, kb, 8, &k, ret_v);
	if (r <= 0)
		return r;
	if (k.mv_size != 8)
		return -EIO;
	*seq = sh_get_be64(k.mv_data);
	return 1;
}

int st_next_pair(struct store_txn *t, int db, uint64_t prefix, uint64_t *cursor,
		     MDB_val *ret_v)
{
	uint8_t kb[16];
	MDB_val k;
	if (*cursor == UINT64_MAX)
		return 0;
	sh_put_be64(kb, prefix);
	sh_put_be64(kb + 8, *cursor + 1);
	int r = st_seek(t, db, kb, 16, &k, ret_v);
	if (r <= 0)
		return r;
	if (k.mv_size != 16 || sh_get_be64(k.mv_data) != prefix)
		return 0;
	*cursor = sh_get_be64((const uint8_t *)k.mv_data + 8);
	return 1;
}

/* Appends v to *arr (n of cap used), growing it in a. */
int st_u64_push(struct arena *a, uint64_t **arr, size_t *n, size_t *cap, uint64_t v)
{
	if (*n == *cap) {
		size_t nc = *cap ? 2 * *cap : 16;
		uint64_t *more = arena_alloc(a, nc * sizeof(*more));
		if (!more)
			return -ENOMEM;
		if (*n)
			memcpy(more, *arr, *n * sizeof(*more));
		*arr = more;
		*cap = nc;
	}
	(*arr)[(*n)++] = v;
	return 0;
}

bool st_has_u64(const uint64_t *arr, size_t n, uint64_t v)
{
	for (size_t i = 0; i < n; i++)
		if (arr[i] == v)
			return true;
	return false;
}

static int write_format(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc) {
		snprintf(err, errlen, "%s: cannot begin a transaction: %s", s->dir, mdb_strerror(rc));
		return st_lmdb_err(rc);
	}
	MDB_val k = val_of("format", 6), v;
	char fmt[16];
	int n = snprintf(fmt, sizeof(fmt), "%u", STORE_FORMAT_VERSION);
	v = val_of(fmt, (size_t)n);
	rc = mdb_put(txn, s->dbi[DB_META], &k, &v, s->old_format ? 0 : MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc) {
		snprintf(err, errlen, "%s: cannot write the format version: %s", s->dir,
			 mdb_strerror(rc));
		return st_lmdb_err(rc);
	}
	return 0;
}

static int open_dbs(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	unsigned flags = s->read_only ? MDB_RDONLY : 0;
	int rc = mdb_txn_begin(s->env, NULL, flags, &txn);
	if (rc) {
		snprintf(err, errlen, "%s: %s", s->dir, mdb_strerror(rc));
		return st_lmdb_err(rc);
	}
	for (int i = 0; i < DB_COUNT; i++) {
		rc = mdb_dbi_open(txn, db_names[i], s->read_only ? 0 : MDB_CREATE, &s->dbi[i]);
		if (rc == MDB_NOTFOUND && i == DB_FILES) {
			s->files_absent = true; /* older, read-only: no files yet */
			continue;
		}
		if (rc == MDB_NOTFOUND && i == DB_DAYS) {
			s->days_absent = true; /* older, read-only: no counts yet */
			continue;
		}
		if (rc == MDB_NOTFOUND && i == DB_WIDE) {
			s->wide_absent = true; /* format 5 or older, read-only */
			continue;
		}
		if (rc == MDB_NOTFOUND) {
			snprintf(err, errlen, "%s holds no Shahidi store (no '%s' table)", s->dir,
				 db_names[i]);
			mdb_txn_abort(txn);
			return -ENOENT;
		}
		if (rc) {
			snprintf(err, errlen, "%s: table %s: %s", s->dir, db_names[i], mdb_strerror(rc));
			mdb_txn_abort(txn);
			return st_lmdb_err(rc);
		}
	}

	/* The format check: a newer or unknown format is refused, never
	 * "repaired". */
	MDB_val k = val_of("format", 6), v;
	rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
	if (rc == 0) {
		char fmt[16] = {0};
		memcpy(fmt, v.mv_data, SH_MIN(v.mv_size, sizeof(fmt) - 1));
		char *end;
		unsigned long ver = strtoul(fmt, &end, 10);
		if (*end || end == fmt || ver < 1 || ver > STORE_FORMAT_VERSION) {
			snprintf(err, errlen,
				 "%s holds store format '%s'; this program reads formats 1 to %u. "
				 "Refusing to open it: use the Shahidi release that wrote it.",
				 s->dir, fmt, STORE_FORMAT_VERSION);
			mdb_txn_abort(txn);
			return -ENOTSUP;
		}
		/* Format 1 is format 2 without pointer records, format 2 is
		 * format 3 with one item per feed entry: both are read as they
		 * are, and marked 3 before anything is written to them. */
		s->old_format = ver < STORE_FORMAT_VERSION;
		s->opened_format = (unsigned)ver;
	}
	bool missing = rc == MDB_NOTFOUND;
	if (rc && !missing) {
		snprintf(err, errlen, "%s: %s", s->dir, mdb_strerror(rc));
		mdb_txn_abort(txn);
		return st_lmdb_err(rc);
	}
	if (s->read_only && missing) {
		mdb_txn_abort(txn);
		snprintf(err, errlen, "%s holds no Shahidi store (no format version)", s->dir);
		return -ENOENT;
	}
	/* Committing (even a read-only transaction) keeps the table handles. */
	rc = mdb_txn_commit(txn);
	if (rc) {
		snprintf(err, errlen, "%s: %s", s->dir, mdb_strerror(rc));
		return st_lmdb_err(rc);
	}
	return (missing || s->old_format) && !s->read_only ? write_format(s, err, errlen) : 0;
}

static uint64_t st_last_txnid(struct store *s)
{
	MDB_envinfo ei;
	/* reads the meta page in the map: no transaction, no I/O */
	return mdb_env_info(s->env, &ei) == 0 ? (uint64_t)ei.me_last_txnid : 0;
}

int store_open(const char *dir, const struct store_opts *opts, struct store **ret, char *err,
	       size_t errlen)
{
	struct store_opts o = opts ? *opts : (struct store_opts){0};
	/* Big from the start: growing the map remaps it, and every page is
	 * faulted in again; reserving address space costs nothing. */
	if (!o.map_size)
		o.map_size = (size_t)4 << 30;
	if (!o.release_above)
		o.release_above = (size_t)512 << 20;
	if (!o.max_map_size)
		o.max_map_size = (size_t)1 << 40;
	if (o.map_size > o.max_map_size)
		o.map_size = o.max_map_size;
	if (!o.max_skew_ms)
		o.max_skew_ms = 3600 * 1000;
	if (!o.wide_scan)
		o.wide_scan = 65536;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium failed to initialise");
		return -EIO;
	}
	struct store *s = calloc(1, sizeof(*s) + strlen(dir) + 1);
	if (!s)
		return -ENOMEM;
	strcpy(s->dir, dir);
	s->opts = o;
	s->read_only = o.read_only;
	pthread_rwlock_init(&s->resize_lock, NULL);
	pthread_mutex_init(&s->release_lock, NULL);
	pthread_mutex_init(&s->hlc_lock, NULL);

	int r;
	struct stat st;
	if (stat(dir, &st) < 0) {
		if (errno != ENOENT || o.read_only) {
			snprintf(err, errlen, "%s: %s", dir, strerror(errno));
			r = -errno;
			goto fail;
		}
		if (mkdir(dir, 0700) < 0) {
			snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
			r = -errno;
			goto fail;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", dir);
		r = -ENOTDIR;
		goto fail;
	} else if (!o.read_only && (st.st_mode & 077)) {
		/* Survivors' names live here: nobody else may read it. */
		if (chmod(dir, st.st_mode & 0700) < 0) {
			snprintf(err, errlen, "cannot make %s private (0700): %s", dir, strerror(errno));
			r = -errno;
			goto fail;
		}
	}

	int rc = mdb_env_create(&s->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(s->env, DB_COUNT + 4);
	if (!rc)
		rc = mdb_env_set_mapsize(s->env, o.map_size);
	if (!rc)
		rc = mdb_env_set_maxreaders(s->env, 256);
	if (!rc)
		rc = mdb_env_open(s->env, dir,
				  MDB_NOTLS | MDB_NORDAHEAD | (o.read_only ? MDB_RDONLY : 0) |
					  (o.unsafe_nosync ? MDB_NOSYNC : 0),
				  0600);
	if (rc) {
		snprintf(err, errlen, "cannot open the store in %s: %s", dir, mdb_strerror(rc));
		r = st_lmdb_err(rc);
		goto fail;
	}
	int dead;
	mdb_reader_check(s->env, &dead); /* clear readers left by crashed processes */
	if ((r = open_dbs(s, err, errlen)) < 0)
		goto fail;
	s->own_txnid = st_last_txnid(s);
	*ret = s;
	return 0;
fail:
	store_close(s);
	return r;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->env)
		mdb_env_close(s->env);
	pthread_rwlock_destroy(&s->resize_lock);
	pthread_mutex_destroy(&s->release_lock);
	pthread_mutex_destroy(&s->hlc_lock);
	free(s);
}

const char *store_dir(const struct store *s)
{
	return s->dir;
}

uint64_t store_max_skew_ms(const struct store *s)
{
	return s->opts.max_skew_ms;
}

/* ---- transactions ---- */

static int load_counters(struct store_txn *t)
{
	struct arena *a = arena_new();
	counters_t *c = NULL;
	if (!a)
		return -ENOMEM;
	int r = st_get_pb(t, a, DB_META, "counters", 8, &shahidi__store__v1__counters__descriptor,
		       (void **)&c);
	if (r == -ENOENT) {
		t->next_log_seq = t->next_record_seq = t->next_feed_seq = 1;
		r = 0;
	} else if (r == 0) {
		t->next_log_seq = c->next_log_seq;
		t->next_record_seq = c->next_record_seq;
		t->next_feed_seq = c->next_feed_seq;
		t->records = c->records;
		t->hlc.last = c->hlc;
		if (c->head_hash.len == 32)
			memcpy(t->head_hash, c->head_hash.data, 32);
	}
	arena_free(a);
	return r;
}

static int save_counters(struct store_txn *t)
{
	counters_t c = SHAHIDI__STORE__V1__COUNTERS__INIT;
	c.next_log_seq = t->next_log_seq;
	c.next_record_seq = t->next_record_seq;
	c.next_feed_seq = t->next_feed_seq;
	c.records = t->records;
	c.hlc = t->hlc.last;
	c.head_hash.data = t->head_hash;
	c.head_hash.len = 32;
	return st_put_pb(t, DB_META, "counters", 8, &c.base, 0);
}

bool store_committing(struct store *s)
{
	return s->committing > 0;
}

uint64_t store_others_writes(struct store *s)
{
	/* In this order: a commit of ours updates own_txnid after others is
	 * counted, so a stale pair can only look like a change, never hide
	 * one. */
	uint64_t last = st_last_txnid(s);
	uint64_t own = s->own_txnid;
	uint64_t others = s->others;
	return last != own ? others * 2 + 1 : others * 2;
}

uint64_t store_txn_others_writes(const struct store_txn *t)
{
	return t->others_writes;
}

int store_begin(struct store *s, bool write, struct store_txn **ret)
{
	if (write && s->read_only)
		return -EROFS;
	struct store_txn *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->s = s;
	t->write = write;
	t->hlc.max_skew_ms = s->opts.max_skew_ms;
	s->txns++;

	int rc;
	for (;;) {
		pthread_rwlock_rdlock(&s->resize_lock);
		rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
		if (rc != MDB_MAP_RESIZED)
			break;
		/* Another process grew the map: adopt its size, then retry. */
		pthread_rwlock_unlock(&s->resize_lock);
		pthread_rwlock_wrlock(&s->resize_lock);
		mdb_env_set_mapsize(s->env, 0);
		pthread_rwlock_unlock(&s->resize_lock);
	}
	if (rc) {
		pthread_rwlock_unlock(&s->resize_lock);
		free(t);
		return st_lmdb_err(rc);
	}
	if (write) {
		/* Not the id after our last commit: another process committed
		 * in between. Nobody else can while this one is open. */
		if ((uint64_t)mdb_txn_id(t->txn) != s->own_txnid + 1)
			s->others++;
		t->others_writes = s->others * 2;
	}
	int r = load_counters(t);
	if (r < 0) {
		store_abort(t);
		return r;
	}
	pthread_mutex_lock(&s->hlc_lock);
	if (s->hlc_last > t->hlc.last)
		t->hlc.last = s->hlc_last;
	pthread_mutex_unlock(&s->hlc_lock);
	*ret = t;
	return 0;
}

static bool disk_nearly_full(const char *dir)
{
	struct statvfs sv;
	return statvfs(dir, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < (16u << 20);
}

int store_commit(struct store_txn *t)
{
	struct store *s = t->s;
	int r = 0;
	if (t->log_cursor)
		mdb_cursor_close(t->log_cursor);
	t->log_cursor = NULL;
	if (t->write) {
		r = st_rc_flush(t); /* the records kept unpacked, written once */
		st_rc_remember(t);
		if (r == 0)
			r = st_feed_flush(t);
		if (r == 0)
			r = save_counters(t);
		close_put_cursors(t);
		if (r < 0) {
			mdb_txn_abort(t->txn);
		} else {
			uint64_t id = (uint64_t)mdb_txn_id(t->txn);
			s->committing++;
			/* A full map shows here too (LMDB takes pages for its
			 * free list as it commits): noted, so that store_write
			 * grows the map and tries again instead of answering
			 * 507 below --max-map. */
			r = st_write_err(t, mdb_txn_commit(t->txn));
			s->committing--;
			if (r == 0) {
				/* A transaction that changed nothing leaves no commit
				 * behind: the last id is then still the one before. */
				uint64_t last = st_last_txnid(s);
				s->own_txnid = last < id ? last : id;
			}
			/* A full disk often shows as a short write, which LMDB reports
			 * as EIO: tell it apart by looking at the free space. */
			if (r == -EIO && disk_nearly_full(s->dir))
				r = -ENOSPC;
		}
	} else {
		mdb_txn_abort(t->txn);
	}
	t->txn = NULL;
	if (r == 0 && t->write) {
		pthread_mutex_lock(&s->hlc_lock);
		if (t->hlc.last > s->hlc_last)
			s->hlc_last = t->hlc.last;
		pthread_mutex_unlock(&s->hlc_lock);
	}
	store_abort(t); /* what is left of it: the lock, the memory */
	return r;
}

void store_abort(struct store_txn *t)
{
	if (!t)
		return;
	if (t->log_cursor)
		mdb_cursor_close(t->log_cursor);
	if (t->txn) { /* NULL once store_commit ended it */
		close_put_cursors(t);
		mdb_txn_abort(t->txn);
	}
	pthread_rwlock_unlock(&t->s->resize_lock);
	free(t->feed);
	free(t->wide);
	free(t->wide_devs);
	free(t->pack_sizes);
	free(t->own_regs);
	arena_free(t->rc_arena);
	free(t);
}

int store_grow(struct store *s)
{
	MDB_envinfo info;
	int r = 0;

	pthread_rwlock_wrlock(&s->resize_lock);
	mdb_env_info(s->env, &info);
	/* Only a full map is helped by a bigger one; a full disk is not. */
	if (!s->map_full || info.me_mapsize >= s->opts.max_map_size) {
		r = -ENOSPC;
		goto out;
	}
	s->map_full = false;
	size_t next = info.me_mapsize * 2;
	if (next > s->opts.max_map_size)
		next = s->opts.max_map_size;
	r = st_lmdb_err(mdb_env_set_mapsize(s->env, next));
out:
	pthread_rwlock_unlock(&s->resize_lock);
	return r;
}

struct hlc *store_hlc(struct store_txn *t)
{
	return &t->hlc;
}

int store_info(struct store_txn *t, struct store_info *ret)
{
	MDB_envinfo info;
	MDB_stat st, cst;
	struct store_info i = {0};
	char path[4096];
	struct stat fst;

	mdb_env_info(t->s->env, &info);
	mdb_env_stat(t->s->env, &st);
	int rc = mdb_stat(t->txn, t->s->dbi[DB_CFL], &cst);
	if (rc)
		return st_lmdb_err(rc);
	i.map_size = info.me_mapsize;
	i.map_used = (info.me_last_pgno + 1) * (uint64_t)st.ms_psize;
	snprintf(path, sizeof(path), "%s/data.mdb", t->s->dir);
	if (stat(path, &fst) == 0)
		i.file_size = (uint64_t)fst.st_size;
	i.records = t->records;
	i.log_entries = t->next_log_seq ? t->next_log_seq - 1 : 0;
	i.open_conflicts = cst.ms_entries;
	i.hlc = t->hlc.last;
	memcpy(i.head_hash, t->head_hash, 32);
	*ret = i;
	return 0;
}

/* ---- records ---- */

unsigned store_opened_format(const struct store *s)
{
	return s->opened_format;
}

/* ---- batches ---- */

int store_write(struct store *s, int (*fn)(struct store_txn *t, void *ud), void *ud)
{
	for (;;) {
		struct store_txn *t;
		int r = store_begin(s, true, &t);
		if (r < 0)
			return r;
		r = fn(t, ud);
		if (r < 0)
			store_abort(t);
		else
			r = store_commit(t);
		if (r != -ENOSPC)
			return r;
		if ((r = store_grow(s)) < 0)
			return r;
	}
}

/* ---- audit ---- */

int store_compact_copy(struct store *s, const char *dest, char *err, size_t errlen)
{
	if (mkdir(dest, 0700) < 0) {
		snprintf(err, errlen, "cannot create %s: %s (the backup goes into a new directory)",
			 dest, strerror(errno));
		return -errno;
	}
	/* A compacting copy: a consistent snapshot (one read transaction)
	 * without the free pages, taken while the server writes. */
	pthread_rwlock_rdlock(&s->resize_lock);
	int rc = mdb_env_copy2(s->env, dest, MDB_CP_COMPACT);
	pthread_rwlock_unlock(&s->resize_lock);
	if (rc) {
		snprintf(err, errlen, "cannot copy the store to %s: %s", dest, mdb_strerror(rc));
		return st_lmdb_err(rc);
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/data.mdb", dest);
	chmod(path, 0600);
	return 0;
}

int store_backup(struct store *s, const char *dest, char *err, size_t errlen)
{
	int r = store_compact_copy(s, dest, err, errlen);
	if (r < 0)
		return r;
	/* After the snapshot: every file it names is complete on disk. */
	r = upload_backup_files(s->dir, dest);
	if (r < 0) {
		snprintf(err, errlen, "cannot copy the attachments to %s/files: %s", dest,
			 strerror(-r));
		return r;
	}
	return 0;
}

/* Finds the mapping of data.mdb in /proc/self/maps: LMDB does not say
 * where its map is (me_mapaddr is only set with MDB_FIXEDMAP). */
static void find_map(struct store *s)
{
	char want[PATH_MAX + 16], real[PATH_MAX], line[PATH_MAX + 128];
	s->map_lo = s->map_hi = 0;
	if (!realpath(s->dir, real))
		return;
	snprintf(want, sizeof(want), "%s/data.mdb", real);
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char *path = strchr(line, '/');
		if (!path || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		path[strcspn(path, "\n")] = 0;
		if (!strcmp(path, want)) {
			s->map_lo = lo;
			s->map_hi = hi;
			break;
		}
	}
	if (f)
		fclose(f);
}

void store_release_pages(struct store *s)
{
	/* Another thread releasing does it for us; no transaction since the
	 * last release has read anything new. */
	if (pthread_mutex_trylock(&s->release_lock))
		return;
	uint64_t txns = s->txns;
	if (txns != s->released_at) {
		MDB_envinfo info;
		pthread_rwlock_rdlock(&s->resize_lock); /* the map stays put */
		mdb_env_info(s->env, &info);
		if (info.me_mapsize != s->map_size || !s->map_hi) {
			find_map(s);
			s->map_size = info.me_mapsize;
		}
		if (s->map_hi)
			madvise((void *)s->map_lo, s->map_hi - s->map_lo, MADV_DONTNEED);
		pthread_rwlock_unlock(&s->resize_lock);
		s->released_at = txns;
	}
	pthread_mutex_unlock(&s->release_lock);
}

int store_process_memory(uint64_t *ret_own, uint64_t *ret_mapped)
{
	unsigned long long size, resident, shared;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return -errno;
	int n = fscanf(f, "%llu %llu %llu", &size, &resident, &shared);
	fclose(f);
	if (n != 3 || shared > resident)
		return -EIO;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	*ret_own = (resident - shared) * page;
	*ret_mapped = shared * page;
	return 0;
}

/* MemAvailable under an eighth of MemTotal. */
static bool memory_short(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return false;
	char line[128];
	unsigned long long total = 0, avail = 0, v;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %llu", &v) == 1)
			total = v;
		else if (sscanf(line, "MemAvailable: %llu", &v) == 1)
			avail = v;
	}
	fclose(f);
	return total && avail && avail < total / 8;
}

/* Pages let go of per call of store_release_if_needed: madvise over the
 * whole map, hundreds of MiB resident, would hold the writer (which calls
 * it between commits) for tens of milliseconds; in steps, a call costs a
 * few, and the next ones (every 100 ms) go on where it stopped. */
#define RELEASE_STEP ((uintptr_t)128 << 20)

bool store_release_if_needed(struct store *s)
{
	uint64_t own, mapped;
	if (store_process_memory(&own, &mapped) < 0)
		return false;
	if (mapped <= s->opts.release_above && !memory_short())
		return false;
	if (pthread_mutex_trylock(&s->release_lock))
		return false;
	MDB_envinfo info;
	pthread_rwlock_rdlock(&s->resize_lock); /* the map stays put */
	mdb_env_info(s->env, &info);
	if (info.me_mapsize != s->map_size || !s->map_hi) {
		find_map(s);
		s->map_size = info.me_mapsize;
		s->release_next = s->map_lo;
	}
	bool done = false;
	if (s->map_hi) {
		/* Only the part of the map the file covers holds pages. */
		MDB_stat st;
		mdb_env_stat(s->env, &st);
		uintptr_t end = s->map_lo + (uintptr_t)(info.me_last_pgno + 1) * st.ms_psize;
		end = SH_MIN(end, s->map_hi);
		if (s->release_next < s->map_lo || s->release_next >= end)
			s->release_next = s->map_lo;
		uintptr_t to = SH_MIN(end, s->release_next + RELEASE_STEP);
		madvise((void *)s->release_next, to - s->release_next, MADV_DONTNEED);
		s->release_next = to;
		done = true;
	}
	pthread_rwlock_unlock(&s->resize_lock);
	pthread_mutex_unlock(&s->release_lock);
	return done;
}
