/* merge: the convergent merge of changes into a record. Pure: no I/O, no
 * store, no clock.
 *
 * THE RULE. Every field of a record, and its deletion (register 0), is a
 * multi-value register. A write is identified by its stamp (HLC, origin
 * device) exactly as the phone made it -- nothing here or in the store
 * ever rewrites a stamp -- and carries its change id (seq) and its base:
 * the stamps of the values its writer had seen for that field.
 *   - A device's own writes are ordered by seq (its change ids), not by
 *     stamp: its latest write supersedes its earlier ones, so a clock set
 *     wrong and then right cannot reorder them.
 *   - A base supersedes exactly the writes it names: a write whose stamp
 *     a base names is dead, whenever it arrives (so a base that names, in
 *     advance, the exact stamp of another device's future write makes
 *     that write dead on arrival). Naming a write that has not arrived
 *     touches nothing else (the stamp is kept as a tombstone until that
 *     write comes); naming a write that never arrives hides nothing.
 *   - The live values are the devices' latest writes that no base names.
 *     More than one live value, not all equal, is an open conflict; equal
 *     concurrent values (two agreeing deletions) are not.
 *   - The value shown is the live value with the greatest (hlc, device).
 *     This is the only place a stamp's size counts: a clock however far
 *     ahead can win which of several concurrent values is shown first,
 *     never more, and the conflict is listed either way.
 *   - A deletion carries what its device had seen of the record (the
 *     stamps of the live values it knew, Deletion.seen). While the record
 *     is deleted, a live value of any field that no live deletion saw (not
 *     listed, and not a write of the deleting device itself, made before or
 *     after it deleted: that device knows it deleted) flags the
 *     record for review (delete_conflict): an edit is never hidden by a
 *     deletion that did not see it, whatever the clocks say.
 *
 * State. A register keeps, per device, its latest write (seq, stamp,
 * value, dead flag, and for a deletion what it saw), plus tombstones: base
 * stamps naming a device's write above its latest one. A base naming a
 * stamp below a device's latest write is moot and dropped. So the state,
 * and merge_digest(), depend only on the set of writes received, in any
 * order and with any repetition, with metadata bounded by the devices
 * that wrote the field and the bases that named writes still to come.
 * This assumes a device's stamps grow with its change ids (any HLC's do);
 * a device that breaks it can make only its own values' liveness depend
 * on arrival order, never another device's.
 *
 * REPEATED ENTITIES. A field of a repeat group is written to an instance
 * (a 16-byte id made on the phone): its register is keyed by (instance,
 * field) and merges exactly as the record's own. Membership is add-wins:
 * an instance exists once any write names it. Field 0 of an instance is
 * its removal, merged like the record's deletion, with its own view
 * (merge_inst.seen): while an instance is removed, a live value of it that
 * no live removal saw flags the record; so does a live LINK value (Value
 * member 12) naming a removed instance, unless the instance holding the
 * link is removed too. Each flag counts as one conflict (delete_conflict
 * is the record's own deletion flag only).
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

/* A write to an instance of a repeat group (FieldWrite.instance). */
struct merge_inst {
	uint8_t id[16];
	/* Field 0 of the instance (its removal): the stamps of the instance's
	 * live values its writer had seen (FieldWrite.seen); borrowed. */
	const struct merge_stamp *seen;
	size_t n_seen;
};

struct merge_write {
	uint32_t field;          /* 0: the deletion (of the record, or of the
				    instance) */
	uint32_t n_base;
	uint64_t hlc;            /* its stamp, as sent */
	const uint8_t *value;    /* encoded shahidi.v1.Value; borrowed, must
				    outlive the arena's use of the record */
	size_t value_len;
	const struct merge_stamp *base; /* borrowed */
	const struct merge_inst *inst;  /* NULL: a field of the record itself;
					   borrowed */
};

struct merge_change {
	uint64_t device;         /* origin device of every write */
	uint64_t seq;            /* its change id, 1 or more: orders the
				    device's own writes */
	uint32_t form_version;
	const struct merge_write *writes;
	size_t n_writes;
	/* The record deletion's view (Deletion.seen); borrowed like values. */
	const struct merge_stamp *seen;
	size_t n_seen;
};

/* Makes an empty record in the arena. NULL when out of memory. */
merge_rec_t *merge_rec_new(struct arena *a, const uint8_t *record_id, const char *form_id);

/* Applies one change. Returns 0 or -ENOMEM (the record is then in an
 * unspecified state and must be dropped). */
int merge_apply(struct arena *a, merge_rec_t *rec, const struct merge_change *c);

/* The register of a field of the record, or NULL. */
const merge_reg_t *merge_register(const merge_rec_t *rec, uint32_t field);
/* The order registers are kept in: <0, 0 or >0 as g comes before, is, or
 * comes after the register of (instance, field): the record's own first
 * (instance NULL), then instances by id, then by field. */
int merge_reg_cmp(const merge_reg_t *g, const uint8_t *instance, uint32_t field);
/* The register of a field of a repeat-group instance (16-byte id; NULL:
 * the record's own), or NULL. */
const merge_reg_t *merge_register_in(const merge_rec_t *rec, const uint8_t *instance,
				     uint32_t field);
/* Whether a register belongs to an instance (then reg->instance.data is its
 * 16-byte id). */
static inline bool merge_reg_in_instance(const merge_reg_t *reg)
{
	return reg->instance.len == 16;
}
/* Whether an instance's removal register says "removed". */
bool merge_instance_removed(const merge_rec_t *rec, const uint8_t instance[16]);
/* Why a removed instance, or a link, flags the record: 1 when an edit of
 * instance that no live removal saw is live; 2 when it is linked to by a
 * live value although removed; 0 when neither. */
int merge_instance_flag(const merge_rec_t *rec, const uint8_t instance[16]);
/* Entries as stored leave out the record's common stamp (see
 * proto/store.proto): merge_rec_expand() fills it in after unpacking,
 * merge_rec_compact() takes it out again before packing. */
void merge_rec_expand(merge_rec_t *rec);
void merge_rec_compact(merge_rec_t *rec);

/* Whether a live value stamped (hlc_a, dev_a) is shown before one stamped
 * (hlc_b, dev_b): the greater stamp, ties broken by device. The one
 * ordering of concurrent values: merge_current() and the record view that
 * export reads (recpack_view()) both pick by it. */
static inline bool merge_shown_before(uint64_t hlc_a, uint64_t dev_a, uint64_t hlc_b,
				      uint64_t dev_b)
{
	return hlc_a > hlc_b || (hlc_a == hlc_b && dev_a > dev_b);
}

/* The current (winning) entry of a register, or NULL when no live value. */
const merge_entry_t *merge_current(const merge_reg_t *reg);
/* Number of live values of a register. */
size_t merge_live_count(const merge_reg_t *reg);
/* Whether a register holds live values that differ: an open conflict. */
bool merge_in_conflict(const merge_reg_t *reg);
bool merge_is_deleted(const merge_rec_t *rec);

/* The encoded Value for "deleted" (true) or "not deleted" (false). */
const uint8_t *merge_deletion_value(bool deleted, size_t *ret_len);

/* BLAKE2b-256 over the merged state only (form, registers' stamps, seqs,
 * dead flags, values, deletions' views and tombstones), not receipt
 * metadata: equal for any order of the same
 * changes. */
void merge_digest(const merge_rec_t *rec, uint8_t out[32]);

#endif
