/* hlc: hybrid logical clocks (Kulkarni, Demirbas et al., 2014).
 *
 * A stamp packs milliseconds since the Unix epoch in its high 48 bits and a
 * logical counter in its low 16 bits, so stamps compare as integers. A clock
 * never runs backwards and stays close to wall time.
 *
 * Phones' clocks are often wrong. A remote stamp more than `max_skew_ms`
 * ahead of our wall clock is not merged into our clock (that would spread
 * the error to every later stamp, as CockroachDB's maximum offset guards
 * against); hlc_receive() reports it instead, and the caller stores the
 * write under a fresh local stamp.
 */
#ifndef SHAHIDI_HLC_H
#define SHAHIDI_HLC_H

#include <stdbool.h>
#include <stdint.h>

#define HLC_COUNTER_BITS 16
#define HLC_COUNTER_MASK ((1u << HLC_COUNTER_BITS) - 1)

struct hlc {
	uint64_t last;        /* last stamp issued or received */
	uint64_t max_skew_ms; /* remote stamps further ahead are clamped */
};

static inline uint64_t hlc_make(uint64_t ms, uint32_t counter)
{
	return (ms << HLC_COUNTER_BITS) | (counter & HLC_COUNTER_MASK);
}

static inline uint64_t hlc_ms(uint64_t stamp)
{
	return stamp >> HLC_COUNTER_BITS;
}

/* A new local stamp, greater than every stamp seen so far. */
uint64_t hlc_tick(struct hlc *c, uint64_t wall_ms);

/* Merges a remote stamp into the clock. Returns true when the stamp is
 * within the allowed skew (the clock now exceeds it), false when it is too
 * far ahead of wall_ms and was left out. */
bool hlc_receive(struct hlc *c, uint64_t remote, uint64_t wall_ms);

/* Formats a stamp as "2026-11-27T05:35:20.123Z+3" (counter after '+'). buf
 * holds at least 40 bytes. */
void hlc_fmt(uint64_t stamp, char *buf, unsigned len);

#endif
