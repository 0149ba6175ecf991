/* erase: a record's content removed on request, the custody trail kept.
 *
 * A survivor may ask that what identifies them be erased (Kenya Data
 * Protection Act 2019, s.40). The log keeps every change as received, so
 * erasure drops the bytes of every change of the record from the log --
 * each entry keeps its change's digest, so the hash chain still verifies
 * and shows that something was there -- and appends one change of its own
 * (Change.erased, a deletion), which the record's other holders pull so
 * that their apps remove it too. The record becomes what that one change
 * makes: a tombstone with no content. The freed pages of the file still
 * hold the old bytes until the store is compacted (erase_compact), which
 * needs the server stopped.
 */
#ifndef SHAHIDI_ERASE_H
#define SHAHIDI_ERASE_H

#include <stddef.h>
#include <stdint.h>

struct store;

struct erase_report {
	uint64_t changes;   /* log entries whose content was dropped */
	uint64_t log_seq;   /* the erasure's own change */
};

/* Erases the record in one write transaction: as the office device actor
 * (an admin), for reason (written to the audit log with actor_name).
 * -ENOENT no such record, -EALREADY erased before, or an error. */
int erase_record(struct store *s, const uint8_t id[16], uint64_t actor, const char *actor_name,
		 const char *reason, uint64_t now_ms, struct erase_report *ret);

/* Rewrites the store's file without its free pages (where erased bytes
 * linger), in place: dir must not be open by any process, this one
 * included. err gets a sentence on failure. */
int erase_compact(const char *dir, char *err, size_t errlen);

#endif
