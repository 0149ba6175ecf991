/* upload: attachments' bytes. What the store keeps about them (the
 * "files" table, its key layout at the top of store.c):
 *
 *   references  which (record, field) names which file, with the SHA-256,
 *               size and media type its Attachment value gave, and who
 *               pushed it: written by apply_change (upload_note_change);
 *   uploads     an upload in progress (tus): its length, the offset that
 *               is durably on disk, who started it, when it expires;
 *   files       a complete file, by its SHA-256: stored once however many
 *               records reference it.
 *
 * The bytes themselves live beside the store, never in LMDB:
 *   DATA/files/partial/<file id hex>   an upload in progress
 *   DATA/files/sha256/<hash hex>        a complete file, immutable
 *
 * Functions take a transaction; they return 0 or a negative errno
 * (-ENOENT: not there). Strings and structs are copied out: nothing
 * returned points into the map.
 */
#ifndef SHAHIDI_UPLOAD_H
#define SHAHIDI_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct form_registry;
struct json_t;
struct store;
struct store_txn;
struct store_change;

#define UPLOAD_MEDIA_MAX 101

/* A reference: an Attachment value some change wrote. */
struct upload_ref {
	uint8_t file_id[16];
	uint8_t record_id[16];
	uint64_t record_seq;
	uint32_t field;
	uint8_t sha256[32];
	uint64_t size;
	uint64_t pusher;       /* the device whose change referenced it */
	uint64_t noted_ms;     /* when that change arrived */
	char media_type[UPLOAD_MEDIA_MAX];
};

/* An upload in progress. */
struct upload_state {
	uint8_t file_id[16];
	uint8_t sha256[32];    /* what the whole file must hash to */
	uint64_t length;
	uint64_t offset;       /* bytes durably on disk */
	uint64_t device;       /* who created it */
	uint64_t created_ms, expires_ms;
	char media_type[UPLOAD_MEDIA_MAX];
};

/* A complete file. */
struct upload_file {
	uint8_t sha256[32];
	uint64_t size;
	uint64_t received_ms;  /* when its last byte arrived */
	uint64_t device;       /* who uploaded it */
	uint8_t file_id[16];   /* the file id it was first uploaded as */
};

/* The apply hook: notes a reference for every Attachment value among c's
 * writes (record_seq: the record it was applied to). Cheap when there
 * are none (one byte looked at per write). */
int upload_note_change(struct store_txn *t, const struct store_change *c, uint64_t record_seq,
		       uint64_t now_ms);

/* Calls fn for each reference to file_id (fn returns nonzero to stop;
 * that value is returned). */
int upload_refs(struct store_txn *t, const uint8_t file_id[16],
		int (*fn)(const struct upload_ref *ref, void *ud), void *ud);
/* Calls fn for every reference, in file id order. */
int upload_refs_all(struct store_txn *t, int (*fn)(const struct upload_ref *ref, void *ud),
		    void *ud);

int upload_get(struct store_txn *t, const uint8_t file_id[16], struct upload_state *ret);
int upload_put(struct store_txn *t, const struct upload_state *u);
int upload_del(struct store_txn *t, const uint8_t file_id[16]);
/* Calls fn for every upload in progress. */
int upload_all(struct store_txn *t, int (*fn)(const struct upload_state *u, void *ud), void *ud);

int upload_file_get(struct store_txn *t, const uint8_t sha256[32], struct upload_file *ret);
int upload_file_put(struct store_txn *t, const struct upload_file *f);

int upload_file_del(struct store_txn *t, const uint8_t sha256[32]);

/* ---- erasure (erase.c) ---- */

struct upload_erased {
	uint64_t references;     /* Attachment values of the record */
	uint64_t files_removed;  /* complete files no record not erased names */
	uint64_t files_kept;     /* complete files a record not erased names too */
	uint64_t uploads_dropped;/* uploads in progress dropped */
};

/* In the erasure's transaction: drops the record's references; a file id
 * no record left (not erased) names loses its upload in progress and gets
 * an erased marker (upload_gone_get); a complete file no record left names
 * by hash loses its entry. The bytes on disk go afterwards, once this has
 * committed: upload_sweep. */
int upload_erase_record(struct store_txn *t, const uint8_t record_id[16], uint64_t now_ms,
			struct upload_erased *ret);
/* When every record that named file_id was erased: 0 and when, -ENOENT. */
int upload_gone_get(struct store_txn *t, const uint8_t file_id[16], uint64_t *ret_ms);

/* upload_out.c: for the office. */

/* Attachments referenced and not yet complete, in the given counties (none:
 * all): {"files_pending", "bytes_waiting", "devices": {hex id: {"name",
 * "county", "files_pending", "bytes_waiting"}}, "counties": {code: {...}}}.
 * A file id counts once per phone. *ret is the caller's (json_decref). */
int upload_pending(struct store_txn *t, const struct form_registry *reg,
		   const char *const *counties, size_t n_counties, struct json_t **ret);
/* Writes every complete file referenced by records of the given counties
 * into dest/sha256/HASH (a hard link where the file system allows, else a
 * copy) and dest/manifest.csv: record id, field, file id, SHA-256, size,
 * media type, received at, uploaded by (the last two empty for a file not
 * received yet). Files of sensitive fields only with include_sensitive
 * (*ret_skipped counts the references left out). One read transaction. */
int upload_export_files(struct store *s, const struct form_registry *reg, const char *data_dir,
			const char *dest, bool include_sensitive, const char *const *counties,
			size_t n_counties, size_t *ret_files, size_t *ret_skipped);
/* A backup's files: data_dir/files/sha256/ into dest/files/sha256/ (hard
 * links where possible). Call after the store's snapshot was copied: every
 * file it names is there by then. */
int upload_backup_files(const char *data_dir, const char *dest);
/* Removes from data_dir/files what the store no longer names: a complete
 * file without its entry, an upload's bytes without its state (after an
 * erasure; or left by a crash between a file's bytes and its entry). Only
 * with no server running on the store: a server files an upload's bytes a
 * moment before its entry. Directories synced. *ret_removed: files
 * unlinked. */
int upload_sweep(struct store *s, const char *data_dir, size_t *ret_removed);


#endif
