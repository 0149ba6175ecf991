/* ratelimit: failed authentications per client address.
 *
 * Tokens carry 256 bits, so guessing one is hopeless; the limit is there
 * so that such attempts are slowed and visible (metrics). Each address may
 * fail `burst` times, then once per `per_ms`; beyond that its refused
 * tokens get 429 and lose their connection. Every token is still looked
 * up (one hash and one read, the same for all): a valid token from a
 * limited address is served, since many phones may share one address
 * behind a carrier's NAT.
 * A fixed table: the oldest entries are forgotten first, memory never
 * grows.
 */
#ifndef SHAHIDI_RATELIMIT_H
#define SHAHIDI_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit;

int ratelimit_new(unsigned burst, unsigned per_ms, struct ratelimit **ret);
void ratelimit_free(struct ratelimit *rl);
/* Is this address allowed to try a token now? addr: 16 bytes (IPv4 as
 * ::ffff:a.b.c.d). */
bool ratelimit_allow(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms);
/* Records a failed attempt. */
void ratelimit_fail(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms);

#endif
