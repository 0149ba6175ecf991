/* merge: the convergent merge of changes into a record. Pure: no I/O, no
 * store, no clock.
 *
 * Every field of a record, and its deletion flag (register 0), is a
 * multi-value register. A write carries its stamp (HLC, origin device) and
 * its base: the stamps of the values its writer had seen for that field.
 * A write is superseded by
 *   - any write whose base names its stamp, and
 *   - any later write (higher HLC) of the same device, since a device has
 *     always seen its own earlier writes.
 * The live values of a register are the writes received that nothing
 * received supersedes. Its current value is the live value with the
 * greatest (hlc, device); more than one live value is an open conflict.
 * A write whose base names every live value resolves it.
 *
 * Because a device's writes to a register supersede one another, a
 * register keeps at most one entry per device: its highest stamp seen
 * (from a write or from a base naming it), whether that stamp is
 * superseded, and the value when it is live. That is what makes the result
 * depend only on the set of writes received, not their order or
 * repetition, with metadata bounded by the number of devices that wrote
 * the field (as cr-sqlite's per-column versions are).
 *
 * A record whose deletion register says "deleted" while a field holds a
 * live write with a higher HLC than the deletion, from another device, is
 * flagged: that edit was made without seeing the deletion (an HLC that had
 * seen it would be higher), so a person must look.
 *
 * Records are shahidi.store.v1.Record messages unpacked into an arena;
 * merge_apply() edits them in place and allocates from the same arena.
 */
#ifndef SHAHIDI_MERGE_H
#define SHAHIDI_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.pb-c.h"

struct arena;

typedef Shahidi__Store__V1__Record merge_rec_t;
typedef Shahidi__Store__V1__Register merge_reg_t;
typedef Shahidi__Store__V1__Entry merge_entry_t;

#define MERGE_DELETION_FIELD 0u

struct merge_stamp {
	uint64_t hlc;
	uint64_t device;
};

struct merge_write {
	uint32_t field;          /* 0: the deletion register */
	uint64_t hlc;            /* stamp it is stored under */
	uint64_t orig_hlc;       /* stamp as sent when clamped for skew; else 0 */
	const uint8_t *value;    /* encoded shahidi.v1.Value; borrowed, must
				    outlive the arena's use of the record */
	size_t value_len;
	const struct merge_stamp *base; /* borrowed */
	size_t n_base;
};

struct merge_change {
	uint64_t device;         /* origin device of every write */
	uint32_t form_version;
	const struct merge_write *writes;
	size_t n_writes;
	/* Base stamps above this bound (the server's clock plus the allowed
	 * skew) can only name writes that were stored under another stamp:
	 * they are matched by the stamp as sent, or else ignored, so that a
	 * fast clock cannot bury later writes. 0 = no bound. */
	uint64_t max_base_hlc;
};

/* Makes an empty record in the arena. NULL when out of memory. */
merge_rec_t *merge_rec_new(struct arena *a, const uint8_t *record_id, const char *form_id);

/* Applies one change. Returns 0 or -ENOMEM (the record is then in an
 * unspecified state and must be dropped). */
int merge_apply(struct arena *a, merge_rec_t *rec, const struct merge_change *c);

/* The register of a field, or NULL. */
const merge_reg_t *merge_register(const merge_rec_t *rec, uint32_t field);
/* Entries as stored leave out the record's common stamp (see
 * proto/store.proto): merge_rec_expand() fills it in after unpacking,
 * merge_rec_compact() takes it out again before packing. */
void merge_rec_expand(merge_rec_t *rec);
void merge_rec_compact(merge_rec_t *rec);

/* The current (winning) entry of a register, or NULL when no live value. */
const merge_entry_t *merge_current(const merge_reg_t *reg);
/* Number of live values of a register. */
size_t merge_live_count(const merge_reg_t *reg);
bool merge_is_deleted(const merge_rec_t *rec);

/* The encoded Value for "deleted" (true) or "not deleted" (false). */
const uint8_t *merge_deletion_value(bool deleted, size_t *ret_len);

/* BLAKE2b-256 over the merged state only (form, registers' stamps, dead
 * flags and values), not receipt metadata: equal for any order of the same
 * changes. */
void merge_digest(const merge_rec_t *rec, uint8_t out[32]);

#endif
