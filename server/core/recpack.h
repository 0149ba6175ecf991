/* recpack: shahidi.store.v1.Record to and from bytes, by hand.
 *
 * The writer unpacks and packs the record of every edited report; done by
 * protobuf-c's generic, descriptor-driven code that was over a third of the
 * writer's time in an edit-heavy load (perf). These do the same for the
 * fields proto/store.proto defines, with one arena allocation per array,
 * and give bytes identical to protobuf-c's (tests/unit/test_merge.c checks
 * both ways). A record with anything else in it (a field a newer release
 * added) goes through protobuf-c, which keeps what it does not know.
 */
#ifndef SHAHIDI_RECPACK_H
#define SHAHIDI_RECPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "merge.h"

struct arena;

/* Unpacks a Record from p[0..n) into a; everything it points to is in a
 * (p may go away). NULL on malformed bytes or out of memory. */
merge_rec_t *recpack_unpack(struct arena *a, const uint8_t *p, size_t n);

/* The packed size of rec, and its bytes (out holds recpack_size()). */
size_t recpack_size(const merge_rec_t *rec);
size_t recpack_pack(const merge_rec_t *rec, uint8_t *out);
/* The same, each register and entry sized once instead of twice: sizes
 * (recpack_sizes_len() of them, the caller's) keeps recpack_size_keep()'s
 * for recpack_pack_sized() of the same, unchanged rec. */
size_t recpack_sizes_len(const merge_rec_t *rec);
size_t recpack_size_keep(const merge_rec_t *rec, size_t *sizes);
size_t recpack_pack_sized(const merge_rec_t *rec, const size_t *sizes, uint8_t *out);

/* ---- reading a record's current values without unpacking it ----
 *
 * Export reads every record of the store: unpacking each into an arena
 * (and, for a pointer record, reading its change from the log) would cost
 * more than rendering it. recpack_view() walks the stored bytes once and
 * hands over each register's current value, by the merge's own ordering
 * (merge_shown_before()), and the record's metadata. Everything it gives
 * points into p. */

struct recpack_view {
	const uint8_t *record_id;
	size_t record_id_len;
	const uint8_t *form_id; /* not NUL-terminated */
	size_t form_id_len;
	uint32_t form_version;
	uint32_t conflicts;
	const uint8_t *writers; /* packed fixed64s, writers_len / 8 of them */
	size_t writers_len;
	uint64_t first_received_ms, last_changed_ms;
	/* A pointer record: its values are the writes of this change in the
	 * log (then no register follows). 0 for a full record. */
	uint64_t log_seq;
	/* An edited record that keeps its first change's registers in the
	 * log: so are those of that change's writes it holds no register of
	 * (recpack_holds()). 0 for others. */
	uint64_t base_log_seq;
};

/* A register's current value. */
struct recpack_value {
	uint32_t field;            /* 0: the deletion (of the record, or of
				      instance) */
	const uint8_t *instance;   /* 16 bytes, or NULL: the record's own */
	const uint8_t *value;      /* the encoded shahidi.v1.Value */
	size_t value_len;
};

struct recpack_view_ops {
	/* Whether the register of field (not 0) is wanted; NULL: all are.
	 * An unwanted register's entries are not read. */
	bool (*want)(void *arg, uint32_t field);
	/* Each register's current value, in the stored order (field 0
	 * first); registers without a live value are left out. A negative
	 * return stops the walk and is returned. */
	int (*value)(void *arg, const struct recpack_value *v);
};

/* Reads the record p[0..n) into v, calling ops for its values. 0, -EPROTO
 * on malformed bytes, or what ops->value returned. */
int recpack_view(const uint8_t *p, size_t n, const struct recpack_view_ops *ops, void *arg,
		 struct recpack_view *v);

/* The log entry whose change's writes are values of the record p[0..n)
 * besides its registers: Record.log_seq of a pointer record (it has no
 * registers), Record.base_log_seq of an edited record that keeps its first
 * change's registers there (those it does not hold: recpack_holds()); 0
 * for a record written in full. */
uint64_t recpack_pointer(const uint8_t *p, size_t n);

/* Whether the record p[0..n) holds a register of (instance, field)
 * (instance NULL: the record's own field): then a write of the change
 * recpack_pointer() names to the same is not one of its values. */
bool recpack_holds(const uint8_t *p, size_t n, uint32_t field, const uint8_t *instance);

#endif
