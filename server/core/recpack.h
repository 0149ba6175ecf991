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

#endif
