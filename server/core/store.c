/* store: Shahidi's LMDB store.
 *
 * ON-DISK FORMAT, version 3 (STORE_FORMAT_VERSION). One LMDB environment
 * (data.mdb, lock.mdb) in the data directory, mode 0700, files 0600. Named
 * databases; integers in keys are big-endian so keys sort numerically;
 * values marked (pb) are shahidi.store.v1 messages (proto/store.proto).
 *
 *   db    key                                   value
 *   meta  "format"                              decimal text, "3"
 *   meta  "counters"                            Counters (pb)
 *   recs  be64 record seq                       Record (pb): merged state, or
 *                                               a pointer to the one change
 *                                               that made it (Record.log_seq)
 *   rid   16-byte record id                     be64 record seq
 *   log   be64 log seq                          LogEntry (pb): change as received
 *   rlog  be64 record seq | be64 log seq        empty: a record's history, as
 *                                               formats 1 and 2 kept it (see
 *                                               below); no longer written
 *   chg   be64 origin device | be64 change id   be64 log seq: change dedupe
 *   feed  be64 device | be64 feed seq           be64 log seqs, 1 to FEED_PACK:
 *                                               what a device pulls; the
 *                                               i-th has feed seq key + i
 *   bat   be64 device | be64 batch seq          BatchMemo (pb): batch dedupe
 *   dev   be64 device id                        Device (pb)
 *   tok   32-byte BLAKE2b-256 of a token        be64 device id
 *   cfl   be64 record seq                       empty: records with open conflicts
 *   audit be64 audit seq                        JSON text: who exported or changed
 *                                               what at the office, and when
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
 * Stores of formats 1 and 2 are marked 3 by the first program that opens
 * them to write; nothing in them is rewritten.
 *
 * Hash chain: each log entry's hash is BLAKE2b-256 of
 *   prev hash (32 zero bytes for entry 1) | be64 seq | be64 received_ms |
 *   be64 device | be64 batch_seq | be64 record_seq | change_digest
 * where change_digest is BLAKE2b-256 of the change as received. The chain
 * covers the digest, not the bytes, so that erasing a survivor's data on
 * request can later drop the content and keep the chain verifiable.
 */
#include "store.h"

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
#include "codec.h"
#include "common.h"
#include "form.h"
#include "hlc.h"
#include "recpack.h"
#include "wire.h"

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
	DB_COUNT
};

static const char *const db_names[DB_COUNT] = {
	"meta", "recs", "rid", "log", "rlog", "chg", "feed", "bat", "dev", "tok", "cfl", "audit",
};

typedef Shahidi__Store__V1__Counters counters_t;

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
	size_t map_size;
	struct store_opts opts;
	bool read_only;
	bool old_format;           /* opened a store of an older format */
	unsigned opened_format;    /* the format it had when opened; 0 = new */
	char dir[];
};

/* A feed item waiting for the end of its transaction (feed_add). */
struct feed_item {
	uint64_t device, log_seq;
};

/* Items per feed entry: 512 bytes, well inside a leaf node; a pull that
 * stops inside one re-reads at most this many. */
#define FEED_PACK 64

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
	struct feed_item *feed;    /* owned; written by feed_flush */
	size_t n_feed, cap_feed;
	/* store_feed_next's last entry, in a read transaction (points into
	 * the map, valid while it lasts) */
	uint64_t fc_device, fc_first;
	const uint8_t *fc_items;
	size_t fc_n;
};

static int feed_flush(struct store_txn *t);

/* The one place LMDB's codes become ours. */
static int lmdb_err(int rc)
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

/* Write errors: as lmdb_err(), remembering a full map. */
static int write_err(struct store_txn *t, int rc)
{
	if (rc == MDB_MAP_FULL)
		t->s->map_full = true;
	return lmdb_err(rc);
}

static MDB_val val_of(const void *p, size_t n)
{
	return (MDB_val){.mv_size = n, .mv_data = (void *)p};
}

static int get_raw(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *ret)
{
	MDB_val k = val_of(key, klen);
	return lmdb_err(mdb_get(t->txn, t->s->dbi[db], &k, ret));
}

static int put_raw(struct store_txn *t, int db, const void *key, size_t klen, const void *v,
		   size_t vlen, unsigned flags)
{
	MDB_val k = val_of(key, klen), d = val_of(v, vlen);
	return write_err(t, mdb_put(t->txn, t->s->dbi[db], &k, &d, flags));
}

/* Puts key -> v unless key is there: 0 put, 1 with *ret_old the value
 * already there. One descent of the tree where a get and a put took two. */
static int put_new(struct store_txn *t, int db, const void *key, size_t klen, const void *v,
		   size_t vlen, MDB_val *ret_old)
{
	MDB_val k = val_of(key, klen), d = val_of(v, vlen);
	int rc = mdb_put(t->txn, t->s->dbi[db], &k, &d, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		*ret_old = d;
		return 1;
	}
	return write_err(t, rc);
}

static int del_raw(struct store_txn *t, int db, const void *key, size_t klen)
{
	MDB_val k = val_of(key, klen);
	int r = write_err(t, mdb_del(t->txn, t->s->dbi[db], &k, NULL));
	return r == -ENOENT ? 0 : r;
}

/* Puts head + tail (a prepared part and fields appended to it: protobuf
 * takes fields in any order) straight into LMDB's page. */
static int put_concat(struct store_txn *t, int db, const void *key, size_t klen,
		      const uint8_t *head, size_t hlen, const uint8_t *tail, size_t tlen,
		      unsigned flags)
{
	MDB_val k = val_of(key, klen), d = {.mv_size = hlen + tlen};
	int r = write_err(t, mdb_put(t->txn, t->s->dbi[db], &k, &d, flags | MDB_RESERVE));
	if (r < 0)
		return r;
	memcpy(d.mv_data, head, hlen);
	memcpy((uint8_t *)d.mv_data + hlen, tail, tlen);
	return 0;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v > 0x7f) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t put_field_uint(uint8_t *p, uint32_t number, uint64_t v)
{
	size_t n = put_varint(p, (uint64_t)number << 3);
	return n + put_varint(p + n, v);
}

static size_t put_field_fixed64(uint8_t *p, uint32_t number, uint64_t v)
{
	size_t n = put_varint(p, (uint64_t)number << 3 | 1);
	for (int i = 0; i < 8; i++)
		p[n++] = (uint8_t)(v >> (8 * i));
	return n;
}

static size_t put_field_bytes(uint8_t *p, uint32_t number, const uint8_t *b, size_t len)
{
	size_t n = put_varint(p, (uint64_t)number << 3 | 2);
	n += put_varint(p + n, len);
	memcpy(p + n, b, len);
	return n + len;
}

/* Packs a message straight into LMDB's page: no intermediate copy. */
static int put_pb(struct store_txn *t, int db, const void *key, size_t klen,
		  const ProtobufCMessage *m, unsigned flags)
{
	MDB_val k = val_of(key, klen), d;
	d.mv_size = protobuf_c_message_get_packed_size(m);
	int r = write_err(t, mdb_put(t->txn, t->s->dbi[db], &k, &d, flags | MDB_RESERVE));
	if (r < 0)
		return r;
	protobuf_c_message_pack(m, d.mv_data);
	return 0;
}

static int get_pb(struct store_txn *t, struct arena *a, int db, const void *key, size_t klen,
		  const ProtobufCMessageDescriptor *desc, void **ret)
{
	MDB_val v;
	int r = get_raw(t, db, key, klen, &v);
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

static int write_format(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc) {
		snprintf(err, errlen, "%s: cannot begin a transaction: %s", s->dir, mdb_strerror(rc));
		return lmdb_err(rc);
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
		return lmdb_err(rc);
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
		return lmdb_err(rc);
	}
	for (int i = 0; i < DB_COUNT; i++) {
		rc = mdb_dbi_open(txn, db_names[i], s->read_only ? 0 : MDB_CREATE, &s->dbi[i]);
		if (rc == MDB_NOTFOUND) {
			snprintf(err, errlen, "%s holds no Shahidi store (no '%s' table)", s->dir,
				 db_names[i]);
			mdb_txn_abort(txn);
			return -ENOENT;
		}
		if (rc) {
			snprintf(err, errlen, "%s: table %s: %s", s->dir, db_names[i], mdb_strerror(rc));
			mdb_txn_abort(txn);
			return lmdb_err(rc);
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
		return lmdb_err(rc);
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
		return lmdb_err(rc);
	}
	return (missing || s->old_format) && !s->read_only ? write_format(s, err, errlen) : 0;
}

int store_open(const char *dir, const struct store_opts *opts, struct store **ret, char *err,
	       size_t errlen)
{
	struct store_opts o = opts ? *opts : (struct store_opts){0};
	if (!o.map_size)
		o.map_size = (size_t)256 << 20;
	if (!o.max_map_size)
		o.max_map_size = (size_t)1 << 40;
	if (o.map_size > o.max_map_size)
		o.map_size = o.max_map_size;
	if (!o.max_skew_ms)
		o.max_skew_ms = 3600 * 1000;

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
		r = lmdb_err(rc);
		goto fail;
	}
	int dead;
	mdb_reader_check(s->env, &dead); /* clear readers left by crashed processes */
	if ((r = open_dbs(s, err, errlen)) < 0)
		goto fail;
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
	int r = get_pb(t, a, DB_META, "counters", 8, &shahidi__store__v1__counters__descriptor,
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
	return put_pb(t, DB_META, "counters", 8, &c.base, 0);
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
		return lmdb_err(rc);
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
		r = feed_flush(t);
		if (r == 0)
			r = save_counters(t);
		if (r < 0) {
			mdb_txn_abort(t->txn);
		} else {
			r = lmdb_err(mdb_txn_commit(t->txn));
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
	if (t->txn) /* NULL once store_commit ended it */
		mdb_txn_abort(t->txn);
	pthread_rwlock_unlock(&t->s->resize_lock);
	free(t->feed);
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
	r = lmdb_err(mdb_env_set_mapsize(s->env, next));
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
		return lmdb_err(rc);
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

/* A stored record, unpacked into a: a pointer record (Record.log_seq) is
 * rebuilt from the change it points to, then looks like any other. */
static int record_unpack(struct store_txn *t, struct arena *a, const MDB_val *v,
			 merge_rec_t **ret)
{
	merge_rec_t *rec = recpack_unpack(a, v->mv_data, v->mv_size);
	if (!rec)
		return -EIO; /* our own bytes do not decode: corruption */
	if (rec->log_seq) {
		/* One register per write, one entry each: what merging the
		 * change into nothing gives (encode_new_record's record). The
		 * change is copied: its bytes in the map may move when this
		 * transaction writes. */
		const uint8_t *chg;
		size_t len;
		uint64_t pusher;
		struct wire_change c;
		int r = store_log_change(t, rec->log_seq, &chg, &len, &pusher);
		if (r < 0)
			return r == -ENOENT ? -EIO : r;
		uint8_t *copy = arena_memdup(a, chg, len);
		if (!copy)
			return -ENOMEM;
		if ((r = wire_read_change(a, a, SIZE_MAX, SIZE_MAX, copy, len, &c)) < 0)
			return r == -ENOMEM ? r : -EIO;
		if (c.has_deletion)
			return -EIO; /* never in a pointer record's change */
		uint64_t origin = c.origin ? c.origin : pusher;
		size_t n = c.n_fields;
		uint16_t *order = arena_alloc(a, (n + 1) * sizeof(*order));
		merge_reg_t *regs = arena_alloc(a, (n + 1) * sizeof(*regs));
		merge_reg_t **rp = arena_alloc(a, (n + 1) * sizeof(*rp));
		merge_entry_t *es = arena_alloc(a, (n + 1) * sizeof(*es));
		merge_entry_t **ep = arena_alloc(a, (n + 1) * sizeof(*ep));
		if (!order || !regs || !rp || !es || !ep)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			size_t m = i; /* by field, as registers are kept */
			while (m > 0 && c.fields[order[m - 1]].field > c.fields[i].field) {
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
			regs[i].n_entries = 1;
			regs[i].entries = &ep[i];
			rp[i] = &regs[i];
		}
		rec->registers = rp;
		rec->n_registers = n;
		rec->head_log_seq = rec->log_seq; /* its only change */
		rec->log_seq = 0;                 /* written back in full */
	}
	merge_rec_expand(rec);
	*ret = rec;
	return 0;
}

static int record_by_seq(struct store_txn *t, struct arena *a, uint64_t seq, merge_rec_t **ret)
{
	uint8_t k[8];
	MDB_val v;
	sh_put_be64(k, seq);
	int r = get_raw(t, DB_RECS, k, 8, &v);
	return r < 0 ? r : record_unpack(t, a, &v, ret);
}

static int record_seq(struct store_txn *t, const uint8_t id[16], uint64_t *ret)
{
	MDB_val v;
	int r = get_raw(t, DB_RID, id, 16, &v);
	if (r < 0)
		return r;
	if (v.mv_size != 8)
		return -EIO;
	*ret = sh_get_be64(v.mv_data);
	return 0;
}

int store_record_get(struct store_txn *t, struct arena *a, const uint8_t id[16],
		     merge_rec_t **ret)
{
	uint64_t seq;
	int r = record_seq(t, id, &seq);
	return r < 0 ? r : record_by_seq(t, a, seq, ret);
}

/* Positions on the first key >= key in db; 1 found, 0 none. */
static int seek(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *ret_k,
		MDB_val *ret_v)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
	if (rc)
		return lmdb_err(rc);
	*ret_k = val_of(key, klen);
	rc = mdb_cursor_get(c, ret_k, ret_v, MDB_SET_RANGE);
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc ? lmdb_err(rc) : 1;
}

static int next_u64_key(struct store_txn *t, int db, uint64_t *seq, MDB_val *ret_v)
{
	uint8_t kb[8];
	MDB_val k;
	if (*seq == UINT64_MAX)
		return 0;
	sh_put_be64(kb, *seq + 1);
	int r = seek(t, db, kb, 8, &k, ret_v);
	if (r <= 0)
		return r;
	if (k.mv_size != 8)
		return -EIO;
	*seq = sh_get_be64(k.mv_data);
	return 1;
}

int store_record_next(struct store_txn *t, struct arena *a, uint64_t *seq, merge_rec_t **ret)
{
	MDB_val v;
	uint64_t s = *seq;
	int r = next_u64_key(t, DB_RECS, &s, &v);
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
	struct store_cursor *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -ENOMEM;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_RECS], &sc->c);
	if (rc) {
		free(sc);
		return lmdb_err(rc);
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
		return lmdb_err(rc);
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
	int r = next_u64_key(t, DB_CFL, &s, &v);
	if (r <= 0)
		return r;
	if ((r = record_by_seq(t, a, s, ret)) < 0)
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
		return lmdb_err(rc);
	crypto_generichash_init(&st, NULL, 0, 32);
	int r = 0;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		merge_rec_t *rec;
		uint8_t d[32];
		if (v.mv_size != 8) {
			r = -EIO;
			break;
		}
		if ((r = record_by_seq(t, a, sh_get_be64(v.mv_data), &rec)) < 0)
			break;
		merge_digest(rec, d);
		crypto_generichash_update(&st, d, 32);
		arena_reset(a);
		n++;
	}
	mdb_cursor_close(c);
	if (r == 0 && rc != MDB_NOTFOUND)
		r = lmdb_err(rc);
	if (r < 0)
		return r == -ENOENT ? -EIO : r;
	crypto_generichash_final(&st, out, 32);
	*ret_records = n;
	return 0;
}

/* ---- log ---- */

int store_log_get(struct store_txn *t, struct arena *a, uint64_t seq, store_log_t **ret)
{
	uint8_t k[8];
	sh_put_be64(k, seq);
	return get_pb(t, a, DB_LOG, k, 8, &shahidi__store__v1__log_entry__descriptor, (void **)ret);
}

/* Log entry seq's bytes, through the transaction's log cursor: lookups
 * in seq order (an export's, a history's) stay on their leaf page. */
static int log_raw(struct store_txn *t, uint64_t seq, MDB_val *ret)
{
	uint8_t k[8];
	int r;
	sh_put_be64(k, seq);
	if (!t->log_cursor && (r = lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_LOG],
							     &t->log_cursor))) < 0)
		return r;
	MDB_val key = val_of(k, 8);
	return lmdb_err(mdb_cursor_get(t->log_cursor, &key, ret, MDB_SET_KEY));
}

int store_log_change(struct store_txn *t, uint64_t seq, const uint8_t **ret, size_t *ret_len,
		     uint64_t *ret_pusher)
{
	MDB_val v;
	struct pb_field f;
	size_t pos = 0;
	int r;
	if ((r = log_raw(t, seq, &v)) < 0)
		return r;
	*ret = NULL;
	*ret_pusher = 0;
	while ((r = codec_pb_next(v.mv_data, v.mv_size, &pos, &f)) > 0) {
		if (f.number == 2 && f.wire_type == 1) /* LogEntry.device */
			*ret_pusher = f.varint;
		else if (f.number == 5 && f.wire_type == 2) { /* LogEntry.change */
			*ret = f.data;
			*ret_len = f.len;
		}
	}
	return r < 0 || !*ret ? -EIO : 0;
}

static int next_pair(struct store_txn *t, int db, uint64_t prefix, uint64_t *cursor,
		     MDB_val *ret_v)
{
	uint8_t kb[16];
	MDB_val k;
	if (*cursor == UINT64_MAX)
		return 0;
	sh_put_be64(kb, prefix);
	sh_put_be64(kb + 8, *cursor + 1);
	int r = seek(t, db, kb, 16, &k, ret_v);
	if (r <= 0)
		return r;
	if (k.mv_size != 16 || sh_get_be64(k.mv_data) != prefix)
		return 0;
	*cursor = sh_get_be64((const uint8_t *)k.mv_data + 8);
	return 1;
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
		if (f.number == 9 && f.wire_type == 0)
			*ret = f.varint;
	return r < 0 ? -EIO : 0;
}

/* Appends v to *arr (n of cap used), growing it in a. */
static int u64_push(struct arena *a, uint64_t **arr, size_t *n, size_t *cap, uint64_t v)
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

int store_record_history(struct store_txn *t, struct arena *a, const merge_rec_t *rec,
			 uint64_t **ret, size_t *ret_n)
{
	uint64_t *chain = NULL, *all = NULL;
	size_t n_chain = 0, cap_chain = 0, n = 0, cap = 0;
	int r;
	/* The chain, newest first... */
	for (uint64_t at = rec->log_seq ? rec->log_seq : rec->head_log_seq, prev; at; at = prev) {
		if ((r = u64_push(a, &chain, &n_chain, &cap_chain, at)) < 0 ||
		    (r = log_prev(t, at, &prev)) < 0)
			return r;
		if (prev >= at)
			return -EIO; /* a chain only goes back */
	}
	/* ...after what formats 1 and 2 indexed before it began (its first
	 * entry is the newest of those, or the record's first change). */
	uint64_t before = n_chain ? chain[n_chain - 1] : UINT64_MAX, cur = 0;
	MDB_val v;
	while ((r = next_pair(t, DB_RLOG, rec->seq, &cur, &v)) == 1 && cur < before)
		if ((r = u64_push(a, &all, &n, &cap, cur)) < 0)
			return r;
	if (r < 0)
		return r;
	for (size_t i = n_chain; i-- > 0;)
		if ((r = u64_push(a, &all, &n, &cap, chain[i])) < 0)
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
		while (n < 4096 && (more = next_u64_key(t, DB_LOG, &seq, &(MDB_val){0})) == 1) {
			store_log_t *e;
			arena_reset(a);
			if ((r = store_log_get(t, a, seq, &e)) < 0)
				break;
			uint8_t h[32], d[32];
			chain_hash(prev, seq, e, h);
			bool ok = seq == last + 1 && e->hash.len == 32 && !memcmp(h, e->hash.data, 32);
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

/* ---- applying changes ---- */

/* Queues a feed item; feed_flush writes them at the end of the
 * transaction. */
static int feed_add(struct store_txn *t, uint64_t device, uint64_t log_seq)
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

static int feed_item_cmp(const void *x, const void *y)
{
	const struct feed_item *a = x, *b = y;
	if (a->device != b->device)
		return a->device < b->device ? -1 : 1;
	return a->log_seq < b->log_seq ? -1 : a->log_seq > b->log_seq;
}

/* Writes the queued items: per device, in log order, at most FEED_PACK to
 * an entry. */
static int feed_flush(struct store_txn *t)
{
	if (!t->n_feed)
		return 0;
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
		int r = put_raw(t, DB_FEED, k, 16, v, 8 * n, 0);
		if (r < 0)
			return r;
		t->next_feed_seq += n;
		i += n;
	}
	t->n_feed = 0;
	t->counters_dirty = true;
	return 0;
}

static bool has_u64(const uint64_t *arr, size_t n, uint64_t v)
{
	for (size_t i = 0; i < n; i++)
		if (arr[i] == v)
			return true;
	return false;
}

/* Packs rec straight into LMDB's page. */
static int put_rec(struct store_txn *t, const uint8_t k[8], const merge_rec_t *rec, unsigned flags)
{
	MDB_val key = val_of(k, 8), d = {.mv_size = recpack_size(rec)};
	int r = write_err(t, mdb_put(t->txn, t->s->dbi[DB_RECS], &key, &d, flags | MDB_RESERVE));
	if (r < 0)
		return r;
	recpack_pack(rec, d.mv_data);
	return 0;
}

static int put_record(struct store_txn *t, merge_rec_t *rec, bool is_new, bool had_conflict)
{
	uint8_t k[8];
	sh_put_be64(k, rec->seq);
	merge_rec_compact(rec);
	int r = put_rec(t, k, rec, is_new ? MDB_APPEND : 0);
	merge_rec_expand(rec);
	if (r < 0)
		return r;
	if (rec->conflicts && !had_conflict)
		return put_raw(t, DB_CFL, k, 8, "", 0, 0);
	if (!rec->conflicts && had_conflict)
		return del_raw(t, DB_CFL, k, 8);
	return 0;
}

#define REJECT(c, ...)                                                        \
	do {                                                                  \
		snprintf(verdict->code, sizeof(verdict->code), "%s", c);      \
		snprintf(verdict->reason, sizeof(verdict->reason), __VA_ARGS__); \
		*ret_outcome = STORE_REJECTED;                                \
		return 0;                                                     \
	} while (0)

/* The record a change makes from nothing, when no write names a base:
 * one register per field, one entry each, written straight as
 * shahidi.store.v1.Record bytes -- what merging into an empty record and
 * packing it would give (merge_rec_compact's base: the creator and the
 * stamp of its lowest field), at a fraction of the cost. Without full,
 * only what a pointer record stores (no registers: see Record.log_seq). */
static int encode_new_record(struct arena *a, struct store_change *c, bool full)
{
	size_t n = c->n_writes, cap = 64 + strlen(c->form_id) + 16;
	uint16_t *order = arena_alloc(a, (n + 1) * sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t m = i; /* insertion sort by field: a few dozen fields */
		while (m > 0 && c->writes[order[m - 1]].field > c->writes[i].field) {
			order[m] = order[m - 1];
			m--;
		}
		order[m] = (uint16_t)i;
		cap += 48 + c->writes[i].value_len;
	}
	uint64_t base_hlc = 0;
	for (size_t i = 0; i < n && !base_hlc; i++)
		if (c->writes[order[i]].field != MERGE_DELETION_FIELD)
			base_hlc = c->writes[order[i]].hlc;
	if (!base_hlc)
		return 0; /* only a deletion: leave it to the general path */
	uint8_t *p = arena_alloc(a, cap), *q = p;
	if (!p)
		return -ENOMEM;
	q += put_field_bytes(q, 1, c->record_id, 16);
	q += put_field_bytes(q, 2, (const uint8_t *)c->form_id, strlen(c->form_id));
	if (c->form_version)
		q += put_field_uint(q, 3, c->form_version);
	q += put_field_fixed64(q, 4, c->origin);
	q += put_field_fixed64(q, 5, base_hlc);
	if (full) {
		/* Record.base_seq (17): every entry's change id, left out of them */
		q += put_varint(q, 17 << 3);
		q += put_varint(q, c->change_id);
	}
	for (size_t i = 0; i < n && full; i++) {
		const struct merge_write *w = &c->writes[order[i]];
		uint8_t entry[32], *e = entry;
		if (w->hlc != base_hlc)
			e += put_field_fixed64(e, 2, w->hlc);
		size_t elen;
		uint8_t hdr[32], *h = hdr;
		if (w->field)
			h += put_field_uint(h, 1, w->field);
		h += put_varint(h, 2 << 3 | 2);
		elen = (size_t)(e - entry) +
		       (w->value_len ? 1 + varint_len(w->value_len) + w->value_len : 0);
		h += put_varint(h, elen);
		q += put_varint(q, 6 << 3 | 2);
		q += put_varint(q, (size_t)(h - hdr) + elen);
		memcpy(q, hdr, (size_t)(h - hdr));
		q += h - hdr;
		memcpy(q, entry, (size_t)(e - entry));
		q += e - entry;
		if (w->value_len)
			q += put_field_bytes(q, 5, w->value, w->value_len);
	}
	uint8_t dev[8];
	for (int i = 0; i < 8; i++)
		dev[i] = (uint8_t)(c->origin >> (8 * i));
	q += put_field_bytes(q, 7, dev, 8); /* writers: packed fixed64 */
	c->new_record = p;
	c->new_record_len = (size_t)(q - p);
	arena_shrink(a, p, c->new_record_len); /* cap is a bound, twice the need */
	return 0;
}

int store_prepare_change(struct arena *a, struct store_change *c, bool creates)
{
	/* LogEntry fields 2, 3, 5, 7 (see proto/store.proto); the writer
	 * appends 1, 4, 6 and 8. */
	size_t cap = 10 + 12 + 12 + c->raw_len + 36;
	uint8_t *p = arena_alloc(a, cap);
	if (!p)
		return -ENOMEM;
	size_t n = put_field_fixed64(p, 2, c->pusher);
	n += put_field_uint(p + n, 3, c->batch_seq);
	n += put_field_bytes(p + n, 5, c->raw, c->raw_len);
	n += put_field_bytes(p + n, 7, c->digest, 32);
	arena_shrink(a, p, n);
	c->log_prefix = p;
	c->log_prefix_len = n;

	bool deletes = false;
	c->has_base = false;
	for (size_t i = 0; i < c->n_writes; i++) {
		c->has_base |= c->writes[i].n_base > 0;
		deletes |= c->writes[i].field == MERGE_DELETION_FIELD;
	}
	c->new_record = NULL;
	c->pointer = false;
	if (!creates || deletes)
		return 0; /* a deletion's view goes through the merge */
	if (!c->has_base) {
		/* The usual report: stored once, in the log; its record points
		 * there. */
		c->pointer = true;
		int r = encode_new_record(a, c, false);
		if (!c->new_record)
			c->pointer = false;
		return r;
	}
	/* What merging it into an empty record gives; the writer uses it when
	 * the record is indeed new and no stamp needs bringing back. */
	merge_rec_t *rec = merge_rec_new(a, c->record_id, c->form_id);
	if (!rec)
		return -ENOMEM;
	struct merge_change mc = {.device = c->origin, .seq = c->change_id,
				  .form_version = c->form_version,
				  .writes = c->writes, .n_writes = c->n_writes,
				  .seen = c->seen, .n_seen = c->n_seen};
	if (merge_apply(a, rec, &mc) < 0)
		return -ENOMEM;
	if (rec->conflicts)
		return 0; /* cannot happen for one change; keep the general path */
	merge_rec_compact(rec);
	size_t len = shahidi__store__v1__record__get_packed_size(rec);
	uint8_t *b = arena_alloc(a, len + 1);
	if (!b)
		return -ENOMEM;
	c->new_record_len = shahidi__store__v1__record__pack(rec, b);
	c->new_record = b;
	return 0;
}

/* Appends the change's log entry: its prepared part and the fields only
 * the writer knows. */
static int append_log(struct store_txn *t, const struct store_change *c, uint64_t log_seq,
		      uint64_t record_seq, uint64_t prev, uint64_t now_ms, uint64_t stored)
{
	store_log_t e = SHAHIDI__STORE__V1__LOG_ENTRY__INIT;
	uint8_t hash[32], tail[80], lk[8];
	e.received_ms = now_ms;
	e.device = c->pusher;
	e.batch_seq = c->batch_seq;
	e.record_seq = record_seq;
	e.change_digest.data = (uint8_t *)c->digest;
	e.change_digest.len = 32;
	chain_hash(t->head_hash, log_seq, &e, hash);
	size_t n = put_field_uint(tail, 1, now_ms);
	n += put_field_uint(tail + n, 4, record_seq);
	if (stored)
		n += put_field_fixed64(tail + n, 6, stored);
	n += put_field_bytes(tail + n, 8, hash, 32);
	if (prev)
		n += put_field_uint(tail + n, 9, prev);
	sh_put_be64(lk, log_seq);
	int r = put_concat(t, DB_LOG, lk, 8, c->log_prefix, c->log_prefix_len, tail, n, MDB_APPEND);
	if (r < 0)
		return r == -EEXIST ? -EIO : r;
	memcpy(t->head_hash, hash, 32);
	return 0;
}

/* A change that makes a new record, from its prepared bytes: no merge, no
 * packing on the writer's thread. */
static int apply_new(struct store_txn *t, const struct store_change *c, uint64_t seq,
		     uint64_t now_ms)
{
	uint64_t log_seq = t->next_log_seq++;
	uint8_t tail[64], rk[8];
	int r;
	t->counters_dirty = true;
	if ((r = append_log(t, c, log_seq, seq, 0, now_ms, 0)) < 0)
		return r;
	sh_put_be64(rk, seq);
	/* Record fields 11-14: receipt metadata; 15: where its registers are. */
	size_t n = put_field_uint(tail, 11, now_ms);
	n += put_field_uint(tail + n, 12, now_ms);
	n += put_field_uint(tail + n, 13, 1);
	n += put_field_uint(tail + n, 14, seq);
	if (c->pointer)
		n += put_field_uint(tail + n, 15, log_seq);
	if ((r = put_concat(t, DB_RECS, rk, 8, c->new_record, c->new_record_len, tail, n,
			    MDB_APPEND)) < 0)
		return r;
	return 0;
}

int store_apply_change(struct store_txn *t, struct arena *a, struct store_change *c,
		       uint64_t now_ms, enum store_outcome *ret_outcome, uint64_t *ret_stored_hlc,
		       struct form_verdict *verdict)
{
	uint8_t ck[16], lk[8], rk[8];
	MDB_val v = {0};
	int r;

	*ret_stored_hlc = 0;
	if (!c->log_prefix && (r = store_prepare_change(a, c, false)) < 0)
		return r;
	/* The dedupe entry goes in first, naming the log seq the change will
	 * have: one lookup answers "seen before?" and records it if not. */
	uint64_t log_seq = t->next_log_seq;
	sh_put_be64(ck, c->origin);
	sh_put_be64(ck + 8, c->change_id);
	sh_put_be64(lk, log_seq);
	r = put_new(t, DB_CHG, ck, 16, lk, 8, &v);
	if (r == 1) {
		store_log_t *e;
		if (v.mv_size != 8)
			return -EIO;
		if ((r = store_log_get(t, a, sh_get_be64(v.mv_data), &e)) < 0)
			return r == -ENOENT ? -EIO : r;
		if (e->change_digest.len != 32 || memcmp(e->change_digest.data, c->digest, 32))
			REJECT("change_id_reused",
			       "change %llu of this device was received before with other content",
			       (unsigned long long)c->change_id);
		*ret_outcome = STORE_DUPLICATE;
		*ret_stored_hlc = e->stored_hlc;
		return 0;
	}
	if (r < 0)
		return r;

	/* Stamps are kept as sent (see merge.h: only the display of concurrent
	 * values depends on their size). A stamp too far ahead of our clock
	 * does not move it, so that one phone's wrong clock reaches nobody
	 * through server_hlc. */
	hlc_receive(&t->hlc, c->hlc, now_ms);
	/* Likewise the id index: the record is new if its id goes in. */
	uint64_t seq = t->next_record_seq;
	sh_put_be64(rk, seq);
	if ((r = put_new(t, DB_RID, c->record_id, 16, rk, 8, &v)) < 0)
		return r;
	bool is_new = r == 0, had_conflict = false;
	if (is_new) {
		t->next_record_seq++;
		t->records++;
	} else if (v.mv_size != 8) {
		return -EIO;
	} else {
		seq = sh_get_be64(v.mv_data);
	}
	if (is_new && c->new_record) {
		if ((r = apply_new(t, c, seq, now_ms)) < 0)
			return r;
		*ret_outcome = STORE_APPLIED;
		return 0;
	}

	merge_rec_t *rec;
	if (is_new) {
		if (!(rec = merge_rec_new(a, c->record_id, c->form_id)))
			return -ENOMEM;
		rec->seq = seq;
		rec->first_received_ms = now_ms;
	} else if ((r = record_by_seq(t, a, seq, &rec)) < 0) {
		return r == -ENOENT ? -EIO : r;
	} else if (strcmp(rec->form_id, c->form_id)) {
		if ((r = del_raw(t, DB_CHG, ck, 16)) < 0) /* not applied after all */
			return r;
		REJECT("form_mismatch", "the record belongs to form %s, the change is for %s",
		       rec->form_id, c->form_id);
	} else if (!c->office && !has_u64(rec->writers, rec->n_writers, c->origin) &&
		   !has_u64(rec->assigned, rec->n_assigned, c->origin)) {
		/* Knowing a record's id is not holding it: a phone changes what
		 * it created or was assigned, nothing else. */
		if ((r = del_raw(t, DB_CHG, ck, 16)) < 0)
			return r;
		REJECT("not_assigned",
		       "this device did not create the record and was not assigned it");
	} else {
		had_conflict = rec->conflicts > 0;
	}

	t->next_log_seq++;
	t->counters_dirty = true;
	struct merge_change mc = {
		.device = c->origin,
		.seq = c->change_id,
		.form_version = c->form_version,
		.writes = c->writes,
		.n_writes = c->n_writes,
		.seen = c->seen,
		.n_seen = c->n_seen,
	};
	if ((r = merge_apply(a, rec, &mc)) < 0)
		return r;
	rec->last_changed_ms = now_ms;
	rec->changes++;

	/* The record's history chain: this change follows its newest (none
	 * for a record last written before format 3: store_record_history
	 * finds the changes before this one in rlog). */
	if ((r = append_log(t, c, log_seq, rec->seq, rec->head_log_seq, now_ms, 0)) < 0)
		return r;
	rec->head_log_seq = log_seq;
	if ((r = put_record(t, rec, is_new, had_conflict)) < 0)
		return r;

	/* Every other device that holds the record pulls the change. */
	for (size_t i = 0; i < rec->n_writers; i++) {
		uint64_t d = rec->writers[i];
		if (d != c->origin && d != c->pusher && (r = feed_add(t, d, log_seq)) < 0)
			return r;
	}
	for (size_t i = 0; i < rec->n_assigned; i++) {
		uint64_t d = rec->assigned[i];
		if (d != c->origin && d != c->pusher && !has_u64(rec->writers, rec->n_writers, d) &&
		    (r = feed_add(t, d, log_seq)) < 0)
			return r;
	}
	*ret_outcome = STORE_APPLIED;
	return 0;
}

int store_record_replace(struct store_txn *t, merge_rec_t *rec)
{
	uint8_t k[8];
	MDB_val v;
	sh_put_be64(k, rec->seq);
	int r = get_raw(t, DB_CFL, k, 8, &v);
	if (r < 0 && r != -ENOENT)
		return r;
	return put_record(t, rec, false, r == 0);
}

unsigned store_opened_format(const struct store *s)
{
	return s->opened_format;
}

/* ---- batches ---- */

int store_memo_get(struct store_txn *t, struct arena *a, uint64_t device, uint64_t batch_seq,
		   store_memo_t **ret)
{
	uint8_t k[16];
	sh_put_be64(k, device);
	sh_put_be64(k + 8, batch_seq);
	return get_pb(t, a, DB_BAT, k, 16, &shahidi__store__v1__batch_memo__descriptor,
		      (void **)ret);
}

int store_memo_put(struct store_txn *t, uint64_t device, uint64_t batch_seq,
		   const store_memo_t *m)
{
	uint8_t k[16];
	sh_put_be64(k, device);
	sh_put_be64(k + 8, batch_seq);
	return put_pb(t, DB_BAT, k, 16, &m->base, 0);
}

/* ---- devices ---- */

static const char *const role_names[] = {[ROLE_DEVICE] = "device",
					 [ROLE_COORDINATOR] = "coordinator",
					 [ROLE_ADMIN] = "admin"};

const char *store_role_name(uint32_t role)
{
	return role >= ROLE_DEVICE && role <= ROLE_ADMIN ? role_names[role] : "unknown";
}

int store_role_parse(const char *s, uint32_t *ret)
{
	for (uint32_t r = ROLE_DEVICE; r <= ROLE_ADMIN; r++)
		if (!strcmp(s, role_names[r])) {
			*ret = r;
			return 0;
		}
	return -EINVAL;
}

int store_device_get(struct store_txn *t, struct arena *a, uint64_t id, store_device_t **ret)
{
	uint8_t k[8];
	sh_put_be64(k, id);
	return get_pb(t, a, DB_DEV, k, 8, &shahidi__store__v1__device__descriptor, (void **)ret);
}

int store_device_put(struct store_txn *t, const store_device_t *d)
{
	uint8_t k[8];
	sh_put_be64(k, d->id);
	return put_pb(t, DB_DEV, k, 8, &d->base, 0);
}

int store_device_next(struct store_txn *t, struct arena *a, uint64_t *id, store_device_t **ret)
{
	MDB_val v;
	uint64_t s = *id;
	int r = next_u64_key(t, DB_DEV, &s, &v);
	if (r <= 0)
		return r;
	store_device_t *d = (store_device_t *)protobuf_c_message_unpack(
		&shahidi__store__v1__device__descriptor, arena_pb_allocator(a), v.mv_size, v.mv_data);
	if (!d)
		return -EIO;
	*id = s;
	*ret = d;
	return 1;
}

int store_token_lookup(struct store_txn *t, const uint8_t hash[32], uint64_t *ret_id)
{
	MDB_val v;
	int r = get_raw(t, DB_TOK, hash, 32, &v);
	if (r < 0)
		return r;
	if (v.mv_size != 8)
		return -EIO;
	*ret_id = sh_get_be64(v.mv_data);
	return 0;
}

int store_token_put(struct store_txn *t, const uint8_t hash[32], uint64_t id)
{
	uint8_t v[8];
	sh_put_be64(v, id);
	return put_raw(t, DB_TOK, hash, 32, v, 8, 0);
}

int store_token_del(struct store_txn *t, const uint8_t hash[32])
{
	return del_raw(t, DB_TOK, hash, 32);
}

/* ---- feeds ---- */

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
		return lmdb_err(rc);
	if (rc == 0 && k.mv_size == 16 && !memcmp(k.mv_data, kb, 16))
		return feed_entry(device, &k, &v, ret_first, ret_items, ret_n);
	/* Not an entry starting at pos: the one before may hold it. */
	bool after = rc == 0;
	rc = mdb_cursor_get(c, &k, &v, after ? MDB_PREV : MDB_LAST);
	if (rc && rc != MDB_NOTFOUND)
		return lmdb_err(rc);
	int r = rc ? 0 : feed_entry(device, &k, &v, ret_first, ret_items, ret_n);
	if (r != 0 && (r < 0 || *ret_first + *ret_n > pos))
		return r;
	if (!after)
		return 0;
	if (rc == 0 && (rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) != 0)
		return lmdb_err(rc); /* back to the entry after pos */
	if (rc)
		rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); /* pos was before them all */
	return rc ? lmdb_err(rc) : feed_entry(device, &k, &v, ret_first, ret_items, ret_n);
}

int store_feed_next(struct store_txn *t, uint64_t device, uint64_t *cursor, uint64_t *ret_log_seq)
{
	if (*cursor == UINT64_MAX)
		return 0;
	uint64_t pos = *cursor + 1, first;
	const uint8_t *items;
	size_t n;
	int r;
	if (t->write && (r = feed_flush(t)) < 0)
		return r;
	if (!t->write && t->fc_items && t->fc_device == device && pos >= t->fc_first &&
	    pos - t->fc_first < t->fc_n) {
		first = t->fc_first;
		items = t->fc_items;
		n = t->fc_n;
	} else {
		MDB_cursor *c;
		if ((r = lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_FEED], &c))) < 0)
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

int store_feed_count(struct store_txn *t, uint64_t device, uint64_t cursor, uint64_t *ret)
{
	uint64_t n = 0, first;
	const uint8_t *items;
	size_t k;
	MDB_cursor *c;
	int r = t->write ? feed_flush(t) : 0;
	if (r < 0 || cursor == UINT64_MAX)
		goto out;
	if ((r = lmdb_err(mdb_cursor_open(t->txn, t->s->dbi[DB_FEED], &c))) < 0)
		return r;
	/* The entry holding the first item after cursor, then the rest of
	 * the device's entries in order. */
	r = feed_seek(c, device, cursor + 1, &first, &items, &k);
	if (r == 1)
		n = first + k - SH_MAX(cursor + 1, first);
	while (r == 1) {
		MDB_val kv, v;
		int rc = mdb_cursor_get(c, &kv, &v, MDB_NEXT);
		r = rc ? (rc == MDB_NOTFOUND ? 0 : lmdb_err(rc))
		       : feed_entry(device, &kv, &v, &first, &items, &k);
		if (r == 1)
			n += k;
	}
	mdb_cursor_close(c);
out:
	if (r < 0)
		return r;
	*ret = n;
	return 0;
}

int store_assign(struct store_txn *t, struct arena *a, const uint8_t record_id[16],
		 uint64_t device)
{
	/* As stored: a pointer record stays one (assigning changes no
	 * register). */
	uint64_t seq;
	uint8_t k[8];
	MDB_val v;
	int r = record_seq(t, record_id, &seq);
	if (r < 0)
		return r;
	sh_put_be64(k, seq);
	if ((r = get_raw(t, DB_RECS, k, 8, &v)) < 0)
		return r;
	merge_rec_t *rec = recpack_unpack(a, v.mv_data, v.mv_size);
	if (!rec)
		return -EIO;
	bool pointer = rec->log_seq != 0;
	if (!pointer)
		merge_rec_expand(rec);
	if (has_u64(rec->assigned, rec->n_assigned, device))
		return 0;
	bool writer = has_u64(rec->writers, rec->n_writers, device);
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
	r = pointer ? put_rec(t, k, rec, 0) : put_record(t, rec, false, rec->conflicts > 0);
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
		if ((r = feed_add(t, device, hist[i])) < 0)
			return r;
	return 0;
}

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

int store_audit_append(struct store_txn *t, const char *json, uint64_t *ret_seq)
{
	MDB_cursor *c;
	MDB_val k, v;
	uint64_t seq = 1;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_AUDIT], &c);
	if (rc)
		return lmdb_err(rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		seq = sh_get_be64(k.mv_data) + 1;
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND)
		return lmdb_err(rc);
	uint8_t kb[8];
	sh_put_be64(kb, seq);
	int r = put_raw(t, DB_AUDIT, kb, 8, json, strlen(json), MDB_APPEND);
	if (r == 0 && ret_seq)
		*ret_seq = seq;
	return r;
}

int store_audit_next(struct store_txn *t, struct arena *a, uint64_t *seq, char **ret_json)
{
	MDB_val v;
	uint64_t s2 = *seq;
	int r = next_u64_key(t, DB_AUDIT, &s2, &v);
	if (r <= 0)
		return r;
	char *j = arena_alloc(a, v.mv_size + 1);
	if (!j)
		return -ENOMEM;
	memcpy(j, v.mv_data, v.mv_size);
	j[v.mv_size] = 0;
	*seq = s2;
	*ret_json = j;
	return 1;
}

/* ---- backup ---- */

int store_backup(struct store *s, const char *dest, char *err, size_t errlen)
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
		return lmdb_err(rc);
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/data.mdb", dest);
	chmod(path, 0600);
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
