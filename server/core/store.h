/* store: Shahidi's LMDB store. The key layout and the on-disk format
 * version are written down at the top of store.c.
 *
 * One store per process (one MDB_env). Any number of read transactions run
 * beside one write transaction; other processes (the CLI's export, status,
 * backup) read and write the same directory safely. Commits are durable:
 * when store_commit() returns 0 the data survives a power cut.
 *
 * Transactions must be short: never hold one across an event-loop callback.
 * Everything a read returns is copied into the caller's arena and does not
 * point into the map.
 */
#ifndef SHAHIDI_STORE_H
#define SHAHIDI_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "merge.h"
#include "store.pb-c.h"

struct arena;
struct hlc;
struct form_verdict;

#define STORE_FORMAT_VERSION 8u
/* Stores of a format below this one hold records merged by an older rule:
 * they are merged again from the log when first opened to write
 * (rebuild_if_old). Formats 4 to 7 need no rebuild to become 8 (see
 * store.c). */
#define STORE_FORMAT_REBUILD_BELOW 4u

struct store;
struct store_txn;

struct store_opts {
	size_t map_size;      /* initial map size; 0 = 4 GiB (address space
				 only: the file grows as it fills) */
	size_t max_map_size;  /* growth stops here (then -ENOSPC); 0 = 1 TiB */
	bool read_only;       /* open for reading only (tools) */
	uint64_t max_skew_ms; /* stamps further ahead do not move the server's
				 clock; 0 = 1 hour */
	size_t release_above; /* store_release_if_needed: mapped bytes resident
				 above which the map's pages are let go of;
				 0 = 512 MiB */
	size_t wide_scan;     /* a pull reads at most this many entries of the
				 wide table that name other devices before it
				 answers with what it has (more = true), and a
				 count 16 times as many; 0 = 65,536. Smaller
				 in tests, to reach the bound. */
	bool unsafe_nosync;   /* no fsync (MDB_NOSYNC): for fuzzing only, where
				 durability is not what is tested. Never in the
				 server or the tools. */
};

/* Opens (creating it with mode 0700 when missing) the store in dir. On
 * failure writes a message for people to err and returns a negative errno;
 * -ENOTSUP when the directory holds a format this program does not know. */
int store_open(const char *dir, const struct store_opts *opts, struct store **ret,
	       char *err, size_t errlen);
/* Closes the store. No transaction may be open. NULL is a no-op. */
void store_close(struct store *s);

/* Begins a transaction. A write transaction waits for any other writer,
 * in this process or another. */
int store_begin(struct store *s, bool write, struct store_txn **ret);
/* Commits and frees the transaction, whatever the outcome. 0, -ENOSPC (map
 * or disk full: nothing was written), -EIO. */
int store_commit(struct store_txn *t);
/* Aborts and frees. NULL is a no-op. */
void store_abort(struct store_txn *t);

/* A number that changes whenever another process (the CLI) has committed
 * to the store since: what the server's caches of the store compare
 * against, from any thread, without a transaction or any I/O. It may also
 * change without such a commit (a commit of this process being
 * finished), never the other way round. */
uint64_t store_others_writes(struct store *s);
/* Is a write transaction of this process committing (writing its pages and
 * syncing) now? Any thread; a hint, stale by the time it is read. The
 * uploads' writes wait for it (files.c): a commit's sync waits for all
 * that is queued at the disk before it. */
bool store_committing(struct store *s);
/* In a write transaction: what store_others_writes will return once it
 * has committed, if no other process commits after it. */
uint64_t store_txn_others_writes(const struct store_txn *t);

/* After an operation failed with -ENOSPC and its transaction was aborted:
 * doubles the map when it is what filled up. Returns 0 when the caller
 * should retry, -ENOSPC when the map is at its cap or the disk is full. */
int store_grow(struct store *s);

struct store_info {
	uint64_t map_size;     /* bytes */
	uint64_t map_used;     /* bytes of the map in use */
	uint64_t file_size;    /* bytes of data.mdb on disk */
	uint64_t records;
	uint64_t log_entries;
	uint64_t open_conflicts;
	uint64_t hlc;
	uint8_t head_hash[32];
};
int store_info(struct store_txn *t, struct store_info *ret);

/* The server's hybrid logical clock, as of this transaction. A write
 * transaction saves it at commit. */
struct hlc *store_hlc(struct store_txn *t);
uint64_t store_max_skew_ms(const struct store *s);
const char *store_dir(const struct store *s);

/* ---- records ---- */

/* The record with this id, unpacked into a. -ENOENT when absent. */
int store_record_get(struct store_txn *t, struct arena *a, const uint8_t id[16],
		     merge_rec_t **ret);
/* The next record after *seq in arrival order (seq 0 = from the start);
 * sets *seq to its key. 1 with a record, 0 at the end, or an error. */
int store_record_next(struct store_txn *t, struct arena *a, uint64_t *seq, merge_rec_t **ret);
/* Iterates stored records in arrival order without decoding them, for
 * long scans (export): each record's bytes point into the map and are
 * valid until the next call or the end of the transaction. */
struct store_cursor;
int store_records_cursor(struct store_txn *t, uint64_t after_seq, struct store_cursor **ret);
/* 1 with the next record, 0 at the end, or an error. */
int store_cursor_next(struct store_cursor *c, uint64_t *ret_seq, const uint8_t **ret_data,
		      size_t *ret_len);
void store_cursor_close(struct store_cursor *c);

/* The next record with an open conflict after *seq. Same returns. */
int store_conflict_next(struct store_txn *t, struct arena *a, uint64_t *seq, merge_rec_t **ret);

/* BLAKE2b-256 over every record's merged state (merge_digest) in record id
 * order: equal for two stores that received the same changes in any
 * order. *ret_records is the number of records. */
int store_records_digest(struct store_txn *t, struct arena *a, uint8_t out[32],
			 uint64_t *ret_records);

/* ---- the change log ---- */

typedef Shahidi__Store__V1__LogEntry store_log_t;

/* Entry seq (1, 2, ...), with its change as received in change (a
 * compressed one decoded into a; change_zstd is then empty). -ENOENT when
 * absent, -EBADMSG when its change does not decode (corruption). */
int store_log_get(struct store_txn *t, struct arena *a, uint64_t seq, store_log_t **ret);
/* The change of log entry seq as received, and the device that pushed it;
 * 0 bytes for an erased entry. *ret is borrowed from the map (valid while
 * t is open and writes nothing) or, for a compressed entry, decoded into a.
 * -ENOENT, -EIO, -EBADMSG (it does not decode), -ENOMEM. */
int store_log_change(struct store_txn *t, struct arena *a, uint64_t seq, const uint8_t **ret,
		     size_t *ret_len, uint64_t *ret_pusher);
/* What a resent change is checked against: the digest of the change as
 * received and the stamp it was stored with, read in place (no unpacking,
 * no decompression). -ENOENT, -EIO. */
int store_log_seen(struct store_txn *t, uint64_t seq, uint8_t ret_digest[32],
		   uint64_t *ret_stored_hlc);
/* The log seqs of rec's changes, oldest first: *ret (allocated from a)
 * holds *ret_n of them. rec as store_record_get or store_record_next gave
 * it. */
int store_record_history(struct store_txn *t, struct arena *a, const merge_rec_t *rec,
			 uint64_t **ret, size_t *ret_n);
/* Recomputes the hash chain from entry 1. Returns 0 when intact, or the
 * seq of the first entry whose link does not verify (> 0), or an error.
 * progress (may be NULL) is called every 65536 entries. */
/* The same, calling each (may be NULL) with every entry whose link
 * verified: for checking pinned heads and signed checkpoints. */
int64_t store_verify_chain_each(struct store *s, void (*progress)(uint64_t, uint64_t, void *),
				void (*each)(uint64_t seq, const uint8_t hash[32], void *), void *ud);
/* Drops the content of log entry seq (its change's bytes), keeping its
 * digest and chain link: erasure (erase.h). 0, -ENOENT, or an error. */
int store_log_erase(struct store_txn *t, uint64_t seq);
/* The stored hash (chain link) of log entry seq. 0, -ENOENT, -EIO. */
int store_log_hash(struct store_txn *t, uint64_t seq, uint8_t out[32]);
/* Checks the last n links of the chain and that the store's head is the
 * last one: what the server does at start. 0 when intact, the seq of the
 * first bad link (> 0), or an error. */
int64_t store_verify_tail(struct store *s, uint64_t n);
int64_t store_verify_chain(struct store *s, void (*progress)(uint64_t done, uint64_t total, void *),
			   void *ud);

/* Writes rec back under its seq (rec->seq must name a stored record), as
 * merged: the rebuild's way of replacing a record's merged state. */
int store_record_replace(struct store_txn *t, merge_rec_t *rec);
/* The format the store had when opened (0: new), so that the caller can
 * rebuild the records of an older one (see rebuild.h). */
unsigned store_opened_format(const struct store *s);

/* ---- batches ---- */

typedef Shahidi__Store__V1__BatchMemo store_memo_t;
int store_memo_get(struct store_txn *t, struct arena *a, uint64_t device, uint64_t batch_seq,
		   store_memo_t **ret);
int store_memo_put(struct store_txn *t, uint64_t device, uint64_t batch_seq,
		   const store_memo_t *m);

/* ---- devices and tokens ---- */

typedef Shahidi__Store__V1__Device store_device_t;

enum store_role {
	ROLE_DEVICE = 1,
	ROLE_COORDINATOR = 2,
	ROLE_ADMIN = 3,
	ROLE_METRICS = 4,   /* reads /metrics and nothing else; no county */
};
const char *store_role_name(uint32_t role);
int store_role_parse(const char *s, uint32_t *ret);

int store_device_get(struct store_txn *t, struct arena *a, uint64_t id, store_device_t **ret);
int store_device_put(struct store_txn *t, const store_device_t *d);
/* Devices in id order after *id (0 = first). 1, 0 at the end, or error. */
int store_device_next(struct store_txn *t, struct arena *a, uint64_t *id, store_device_t **ret);
/* The device a token hash belongs to (revoked ones too). -ENOENT. */
int store_token_lookup(struct store_txn *t, const uint8_t hash[32], uint64_t *ret_id);
int store_token_put(struct store_txn *t, const uint8_t hash[32], uint64_t id);
int store_token_del(struct store_txn *t, const uint8_t hash[32]);

/* ---- pull feeds ---- */

/* The next entry of a device's feed after *cursor: its own feed's items
 * and the wide entries naming it, in feed seq order. 1 with *cursor
 * advanced and *ret_log_seq set; 0 at the end, *cursor then past wide
 * entries that name other devices; 2 with no item but *cursor moved past
 * many such entries (a pull stops there, and tells the phone there is
 * more). */
int store_feed_next(struct store_txn *t, uint64_t device, uint64_t *cursor, uint64_t *ret_log_seq);
/* Entries in a device's feed after cursor (what it has yet to pull): its
 * own feed's, and the wide entries naming it among the newest 16 x
 * opts.wide_scan (a million by default; past that a lower bound, for a
 * device that has not pulled for that many changes of widely held
 * records). */
int store_feed_count(struct store_txn *t, uint64_t device, uint64_t cursor, uint64_t *ret);
/* The same for n devices (ids ascending, else -EINVAL; counts[i] for
 * ids[i] after cursors[i]) with one walk of the wide table: the status
 * page counts for every device, and a walk per device cost the page
 * (phones behind) x (wide entries behind them), up to a million each. */
int store_feed_count_many(struct store_txn *t, size_t n, const uint64_t *ids,
			  const uint64_t *cursors, uint64_t *counts);
/* Assigns a record to a device: it will pull the record's whole history
 * and every later change. 0, -ENOENT (no such record). */
int store_assign(struct store_txn *t, struct arena *a, const uint8_t record_id[16],
		 uint64_t device);

/* ---- audit log ---- */

/* Appends one audit event (a JSON object as text: who, when, what) in a
 * write transaction. */
int store_audit_append(struct store_txn *t, const char *json, uint64_t *ret_seq);
/* The next audit event after *seq; 1, 0 at the end. */
int store_audit_next(struct store_txn *t, struct arena *a, uint64_t *seq, char **ret_json);

/* The store alone (no attachments) copied to a new directory dest
 * without its free pages: store_backup's first half, and erasure's
 * compaction. */
int store_compact_copy(struct store *s, const char *dest, char *err, size_t errlen);
/* Writes a consistent, compacted copy of the store into dest, a directory
 * that must not exist yet (made 0700). Safe while the server runs.
 * Restoring = using dest as the data directory. */
int store_backup(struct store *s, const char *dest, char *err, size_t errlen);

/* Lets go of the map's pages this process has read (madvise DONTNEED):
 * they stay in the page cache, but no longer count in this process's
 * memory. For long scans in short-lived tools (export): a scan of the
 * whole store would otherwise keep it all resident. Safe at any time:
 * the map is read-only here and pages fault back in on the next read.
 * Linux only (it finds the map in /proc/self/maps); elsewhere a no-op. */
void store_release_pages(struct store *s);

/* The process's resident memory in two parts, in bytes: its own (anonymous:
 * heap, stacks, LMDB's dirty pages) and mapped files (the store's pages
 * read through the map, which are the kernel's page cache, shared and
 * reclaimable, and the libraries). From /proc/self/statm. 0 or -errno. */
int store_process_memory(uint64_t *ret_own, uint64_t *ret_mapped);

/* store_release_pages(), but only when it is worth its cost: when the
 * mapped memory resident in this process is above opts.release_above, or
 * the machine is short of memory (MemAvailable under an eighth of
 * MemTotal). Letting go on every commit cost the writer ~8% of its time
 * faulting the same pages in again. Cheap to call often (reads
 * /proc/self/statm). Lets go of 128 MiB of the map per call, going on
 * where the last call stopped, so that a call costs the caller (the
 * writer, between commits) a few milliseconds at most. Returns true when
 * it released. */
bool store_release_if_needed(struct store *s);

/* Runs fn in a write transaction and commits it. When the map fills up,
 * aborts, grows the map and runs fn again from the start (so fn must be
 * repeatable: the transaction it saw was never committed). Returns fn's
 * error, a commit error, or -ENOSPC when the map is at its cap or the disk
 * is full. */
int store_write(struct store *s, int (*fn)(struct store_txn *t, void *ud), void *ud);

#endif
