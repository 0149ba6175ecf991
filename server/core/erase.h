/* erase: a record's content removed on request, the custody trail kept.
 *
 * A survivor may ask that what identifies them be erased (Kenya Data
 * Protection Act 2019, s.40). The log keeps every change as received, so
 * erasure drops the bytes of every change of the record from the log --
 * each entry keeps its change's digest, so the hash chain still verifies
 * and shows that something was there -- and appends one change of its own
 * (Change.erased, a deletion), which the record's other holders pull so
 * that their apps remove it too. The record becomes what that one change
 * makes: a tombstone with no content. Its attachments' files go from the
 * disk unless a record not erased names the same bytes. The freed pages
 * of the store's file still hold the old bytes until the store is
 * compacted (erase_compact), which needs the server stopped.
 */
#ifndef SHAHIDI_ERASE_H
#define SHAHIDI_ERASE_H

#include <stddef.h>
#include <stdint.h>

struct store;

struct erase_report {
	uint64_t changes;   /* log entries whose content was dropped */
	uint64_t log_seq;   /* the erasure's own change */
	uint64_t attachments;     /* Attachment values the record's changes held */
	uint64_t files_removed;   /* complete files deleted from the disk */
	uint64_t files_kept;      /* complete files another record (not erased) names */
	uint64_t uploads_dropped; /* uploads in progress dropped, their bytes deleted */
};

/* Erases the record in one write transaction: as the office device actor
 * (an admin), for reason (written to the audit log with actor_name, with
 * how many files were removed and kept). Its attachments go too: the
 * record's references, and the files (complete or in progress) that no
 * record not erased names, from the store and then from the disk
 * (upload_sweep: no server may be running on the store). A download of an
 * erased file id is then refused (upload_gone_get). -ENOENT no such
 * record, -EALREADY erased before, -EREMOTEIO erased (*ret written) but a
 * file could not be deleted (the next erasure tries again), or an error. */
int erase_record(struct store *s, const uint8_t id[16], uint64_t actor, const char *actor_name,
		 const char *reason, uint64_t now_ms, struct erase_report *ret);

/* Rewrites the store's file without its free pages (where erased bytes
 * linger), in place: dir must not be open by any process, this one
 * included. err gets a sentence on failure. */
int erase_compact(const char *dir, char *err, size_t errlen);

#endif
