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

/* Whether a write's value (a shahidi.v1.Value as sent) is an Attachment:
 * field 10, length-delimited, tag 0x52. */
static inline bool upload_value_is_attachment(const uint8_t *value, size_t len)
{
	return len >= 2 && value[0] == 0x52;
}

/* The apply hook: notes a reference for every Attachment value among c's
 * writes (record_seq: the record it was applied to). Nothing to do for a
 * change apply_prepare found without one (c->no_attachments); else one
 * byte looked at per write. */
int upload_note_change(struct store_txn *t, const struct store_change *c, uint64_t record_seq,
		       uint64_t now_ms);

/* Calls fn for each reference to file_id (fn returns nonzero to stop;
 * that value is returned). */
int upload_refs(struct store_txn *t, const uint8_t file_id[16],
		int (*fn)(const struct upload_ref *ref, void *ud), void *ud);
/* Calls fn for every reference, in file id order. */
int upload_refs_all(struct store_txn *t, int (*fn)(const struct upload_ref *ref, void *ud),
		    void *ud);
/* As upload_refs_all, from the reference after `after` on (its key: file
 * id, record, field; NULL: from the first): a long scan resumed in a new
 * read transaction. */
int upload_refs_after(struct store_txn *t, const struct upload_ref *after,
		      int (*fn)(const struct upload_ref *ref, void *ud), void *ud);

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
/* ---- the files' manifest: one row per reference, for the CLI's folder
 * (upload_export_files) and the HTTP export's zip (upload_zip_*) ---- */

struct buf;

/* Which references: records of the given counties (none: all); a file of
 * a sensitive field (or of a field its form does not list) only with
 * include_sensitive. The arrays are the caller's and must outlive the
 * scan (or the zip). */
struct upload_scope {
	const struct form_registry *reg;
	bool include_sensitive;
	const char *const *counties;
	size_t n_counties;
};

/* One reference of a record in scope (a record that is gone names none). */
struct upload_row {
	struct upload_ref ref;
	bool left_out;            /* a sensitive field's, not asked for: no row */
	bool here;                /* the file is complete: file is set */
	struct upload_file file;
};

/* Calls fn for each reference of a record in scope after `after` (NULL:
 * from the first; see upload_refs_after), in the store's order; fn returns
 * nonzero to stop (that value is returned). */
int upload_rows(struct store_txn *t, const struct upload_scope *o, const struct upload_ref *after,
		int (*fn)(const struct upload_row *row, void *ud), void *ud);

/* The manifest's first line, and a row as its line (CRLF ended): record
 * id, field, file id, SHA-256, size, media type, received at, uploaded by
 * (the last two empty for a file not received). 0 or -ENOMEM. */
#define UPLOAD_MANIFEST_HEADER \
	"record_id,field,file_id,sha256,size,media_type,received_at,uploaded_by\r\n"
int upload_row_csv(const struct upload_row *row, struct buf *out);

/* Writes every complete file referenced by records of the given counties
 * into dest/sha256/HASH (a hard link where the file system allows, else a
 * copy) and dest/manifest.csv: record id, field, file id, SHA-256, size,
 * media type, received at, uploaded by (the last two empty for a file not
 * received yet). Files of sensitive fields only with include_sensitive
 * (*ret_skipped counts the references left out). One read transaction. */
int upload_export_files(struct store *s, const struct form_registry *reg, const char *data_dir,
			const char *dest, bool include_sensitive, const char *const *counties,
			size_t n_counties, size_t *ret_files, size_t *ret_skipped);
/* upload_zip.c: the same files and manifest as one zip, made a piece at a
 * time for the HTTP export (GET /v1/export?format=files): an entry
 * sha256/HASH per complete file (each file once, whatever number of
 * references name it), STORED (they are compressed already), read from
 * data_dir a MiB per call; manifest.csv last, so it lists exactly what
 * the archive holds (it is made as the files go: in memory up to 256 KiB,
 * then in an unlinked file beside the store); then the central directory
 * (zipw.h: zip64 where needed). Each call to upload_zip_next holds one
 * short read transaction at most. Memory: one 1 MiB piece, the entries'
 * names and hashes (about 150 bytes a file). */
struct upload_zip;

/* o: copied, its arrays not (they must outlive z). start: where the
 * archive begins in its output (0; tests give more). */
int upload_zip_new(const struct upload_scope *o, const char *data_dir, uint64_t start,
		   struct upload_zip **ret);
void upload_zip_free(struct upload_zip *z);
/* Appends the next piece to out: up to 1 MiB of a file, or the headers
 * of the next, or the manifest and the end. *ret_done with the last. 0 or
 * a negative errno (the archive is then cut: send no more of it). */
int upload_zip_next(struct upload_zip *z, struct store *s, struct buf *out, bool *ret_done);
/* Files whose every byte is in the archive so far; references left out
 * as sensitive. */
uint64_t upload_zip_files(const struct upload_zip *z);
uint64_t upload_zip_left_out(const struct upload_zip *z);

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
