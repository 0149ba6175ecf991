/* wire: shahidi.v1.Change read straight from the bytes received.
 *
 * Not unpacked with protobuf-c: its generic unpacking of every nested Value
 * cost about 15 us a report (values are kept as sent and checked from their
 * bytes), which made decoding the pipeline's bottleneck. Protobuf's rules
 * hold: unknown fields are skipped, a scalar given twice takes its last
 * value; a field of the wrong wire type is malformed. Used by the decoder
 * (sync), which validates what it reads, and by the store, which rebuilds
 * a pointer record from the change in its log.
 */
#ifndef SHAHIDI_WIRE_H
#define SHAHIDI_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "merge.h"

struct arena;
struct form_value;

struct wire_write {
	uint32_t field;
	uint64_t hlc;
	const uint8_t *value;       /* encoded Value as sent; NULL: cleared */
	size_t value_len;
	struct merge_stamp *base;
	size_t n_base;
	const uint8_t *instance;    /* FieldWrite.instance as sent; NULL: none */
	size_t instance_len;
	struct merge_stamp *seen;   /* FieldWrite.seen (an instance's removal) */
	size_t n_seen;
};

struct wire_change {
	uint64_t change_id, hlc, origin;
	uint32_t form_version;
	bool create;
	bool erased; /* Change.erased: set only on the server's erasure (erase.h) */
	const uint8_t *record_id;
	size_t record_id_len;
	const uint8_t *form_id;
	size_t form_id_len;
	struct wire_write *fields;
	size_t n_fields;
	bool has_deletion, deleted;
	uint64_t del_hlc;
	struct merge_stamp *del_base;
	size_t n_del_base;
	struct merge_stamp *del_seen; /* Deletion.seen: what the deleter saw */
	size_t n_del_seen;
};

/* At most this many stamps in a deletion's view (Deletion.seen). */
#define WIRE_MAX_SEEN 4096

/* 0 when protobuf field f (a struct pb_field) has wire type wt, else
 * -EPROTO: for readers of our messages (this one, the batch's). */
#define WIRE_TYPE(f, wt) ((f).wire_type == (wt) ? 0 : -EPROTO)

/* Reads a Change from p[0..n). Base stamps go to a (they outlive the
 * call), the list of writes to tmp (read once, into merge_writes); values,
 * ids and the form id point into p. -EPROTO malformed, -EMSGSIZE more than
 * max_fields writes or max_base stamps in one (or WIRE_MAX_SEEN in a
 * deletion's view), -ENOMEM. */
int wire_read_change(struct arena *a, struct arena *tmp, size_t max_fields, size_t max_base,
		     const uint8_t *p, size_t n, struct wire_change *c);

/* 0 when p[0..n) is a shahidi.v1.Value that a strict protobuf parser
 * (Python's, Java's) accepts: every member we know has its wire type, its
 * strings are UTF-8, its nested messages (Choices, GeoPoint, Attachment,
 * Sealed) parse in turn; unknown members are well-formed. Else -EPROTO.
 * What the server relays to other phones must pass this, whether or not
 * the form knows the field. trusted: a text member (1, 5 or 7) whose
 * UTF-8 the caller checks itself against the form (form_check_value), so
 * that it is not read twice; 0 for none. */
int wire_value_check(const uint8_t *p, size_t n, uint32_t trusted);

/* wire_value_check, and the value read on the way (what form_value_parse
 * gives) into *ret: the decoder reads each value once. 0; -EPROTO as
 * wire_value_check; -EBADMSG when it is well-formed but sets two members
 * of the oneof (form_value_parse refuses that). *ret is scratch when it
 * fails. */
int wire_value_read(const uint8_t *p, size_t n, uint32_t trusted, struct form_value *ret);

/* The merge's view of a change read by wire_read_change, pushed by
 * pusher: one write per field plus one for its deletion, each with its
 * stamp filled in (0 = the change's), its instance (when 16 bytes) and the
 * instance removal's view. Allocates from a. */
int wire_change_merge(struct arena *a, const struct wire_change *wc, uint64_t pusher,
		      struct merge_change *ret);

/* Each write of a Change p[0..n) already in the log, read in place as a
 * pointer record's values (export): fn(arg, field, instance or NULL,
 * value, value_len) per FieldWrite, in order. No stamps, no checks beyond
 * the bytes' framing: the change was validated when it was accepted. 0,
 * -EPROTO, or what fn returned (negative: stops). */
int wire_each_write(const uint8_t *p, size_t n,
		    int (*fn)(void *arg, uint32_t field, const uint8_t *instance,
			      const uint8_t *value, size_t value_len),
		    void *arg);

#endif
