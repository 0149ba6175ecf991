/* uuid: 16-byte record ids.
 *
 * Records are keyed by a UUID the phone makes. Any non-nil UUID is
 * accepted, but our client and simulator make version 7 UUIDs (RFC 9562:
 * a 48-bit millisecond timestamp first): new ids then land at the right
 * edge of the store's id index, which keeps durable commits small
 * (see shared/reference/performance.md: 58k vs 10k creates/s at 1M
 * records).
 */
#ifndef SHAHIDI_UUID_H
#define SHAHIDI_UUID_H

#include <stdbool.h>
#include <stdint.h>

#define UUID_LEN 16
#define UUID_STR_LEN 36

/* Canonical 8-4-4-4-12 lower-case text; buf holds 37 bytes. */
void uuid_fmt(const uint8_t id[UUID_LEN], char buf[UUID_STR_LEN + 1]);
/* Parses canonical text (either case) or 32 hex digits. 0 or -EINVAL. */
int uuid_parse(const char *s, uint8_t ret_id[UUID_LEN]);
bool uuid_is_nil(const uint8_t id[UUID_LEN]);
/* A version 7 UUID for time ms, with random bits from rnd (10 bytes:
 * callers choose the source, so simulations can be replayed). */
void uuid_v7(uint64_t ms, const uint8_t rnd[10], uint8_t ret_id[UUID_LEN]);

#endif
