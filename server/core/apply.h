/* apply: the engine above the store. A validated change (sync.c builds it
 * from the wire, resolve.c at the office) is prepared off the writer's
 * thread (apply_prepare) and applied inside a write transaction
 * (apply_change), where each rule that decides what a change may do has
 * its one place.
 */
#ifndef SHAHIDI_APPLY_H
#define SHAHIDI_APPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "merge.h"

struct arena;
struct form;
struct form_verdict;
struct store_txn;

enum store_outcome {
	STORE_APPLIED = 1,
	STORE_DUPLICATE = 2,
	STORE_REJECTED = 3,
};

/* A validated change, ready to apply. Built by the sync module. */
struct store_change {
	uint64_t pusher;           /* device that pushed it */
	uint64_t origin;           /* its origin device (= pusher for phones) */
	uint64_t change_id;
	uint64_t batch_seq;
	const uint8_t *record_id;  /* 16 bytes, borrowed */
	const char *form_id;       /* borrowed */
	uint32_t form_version;
	const uint8_t *raw;        /* the Change exactly as received, borrowed */
	size_t raw_len;
	uint8_t digest[32];        /* BLAKE2b-256 of raw */
	uint64_t hlc;              /* the change's stamp (max of its writes) */
	struct merge_write *writes; /* borrowed */
	size_t n_writes;
	const struct merge_stamp *seen; /* its deletion's view; borrowed */
	size_t n_seen;
	/* An office change (a resolution): may write a record its device
	 * neither wrote nor was assigned (the caller checked the scope). A
	 * phone may change only records it holds. */
	bool office;
	/* Its form (sync.c and resolve.c set it): the groups' rules need it
	 * (instance_group_mismatch, too_many_instances). NULL: not checked. */
	const struct form *form;
	/* Work done before the writer, so that its single thread does little
	 * more than append (apply_prepare fills these): */
	const uint8_t *log_prefix; /* LogEntry: device, batch, change, digest */
	size_t log_prefix_len;
	const uint8_t *new_record; /* the record this change makes when its
				      record does not exist yet, packed without
				      receipt metadata; NULL if not prepared */
	size_t new_record_len;
	bool pointer;              /* new_record is a pointer record's: no
				      registers, they are this change's */
	bool has_base;             /* a write names a base */
	bool no_attachments;       /* apply_prepare saw no attachment value:
				      nothing for the files index (false:
				      look, as for a change not prepared) */
	/* The bytes its writes borrow (values, bases) outlive the write
	 * transaction, as a pushed batch's do (sync.c): the merged record may
	 * then stay unpacked in the transaction for the next change of it. */
	bool stable;
};

/* Prepares c for apply_change off the writer's thread: the log
 * entry's fixed part, and for a creation the packed new record. Pure
 * computation; allocates from a. */
int apply_prepare(struct arena *a, struct store_change *c, bool creates);

/* Applies one change in a write transaction, in this order:
 *   1. dedupe: (origin, change id) seen before is a duplicate (or, with
 *      other bytes, change_id_reused);
 *   2. the clock rule (clock_rule in apply.c): stamps are kept as sent;
 *      the server's clock takes them only within --max-skew of its own;
 *   3. the holding rule (holding_rule): a phone changes only records it
 *      created or was assigned (not_assigned), of the change's form
 *      (form_mismatch);
 *   4. merge (merge.h), the record written back (records.c);
 *   5. log: appended to the hash-chained log (chain.c);
 *   6. fan-out: into the feeds of the record's other holders (feed.c). *ret_stored_hlc is
 * 0 (stamps are kept as sent; a duplicate of a change stored by an older
 * format says what it was stored under). On STORE_REJECTED, *verdict says
 * why: form_mismatch, change_id_reused, or not_assigned (a phone's change
 * to a record it did not create and was not assigned). A negative return
 * spoils the transaction: abort it (records it keeps unpacked may be
 * half merged). */
int apply_change(struct store_txn *t, struct arena *a, struct store_change *c, uint64_t now_ms,
		 enum store_outcome *ret_outcome, uint64_t *ret_stored_hlc,
		 struct form_verdict *verdict);

/* A change the office makes as device dev (a resolution, an erasure;
 * dev->server_changes already counted in c's change id): applied as
 * apply_change() does, dev saved, *ret_log_seq its entry in the log.
 * -EINVAL with *verdict filled when it was not applied. */
int apply_office_change(struct store_txn *t, struct arena *a, struct store_change *c,
			const Shahidi__Store__V1__Device *dev, uint64_t now_ms,
			struct form_verdict *verdict, uint64_t *ret_log_seq);

#endif
