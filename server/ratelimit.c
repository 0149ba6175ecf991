#include "ratelimit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RL_SLOTS 4096 /* addresses remembered at once */
#define RL_WAYS 8     /* slots an address may use: its hash's bucket */

struct slot {
	uint8_t addr[16];
	double tokens;     /* failures it may still make now */
	uint64_t last_ms;  /* last refill; 0 = free */
};

struct ratelimit {
	unsigned burst, per_ms;
	uint64_t seed;
	struct slot slots[RL_SLOTS];
};

int ratelimit_new(unsigned burst, unsigned per_ms, struct ratelimit **ret)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return -ENOMEM;
	rl->burst = burst;
	rl->per_ms = per_ms ? per_ms : 1;
	rl->seed = (uint64_t)(uintptr_t)rl ^ 0x9e3779b97f4a7c15ull;
	*ret = rl;
	return 0;
}

void ratelimit_free(struct ratelimit *rl)
{
	free(rl);
}

static size_t bucket(const struct ratelimit *rl, const uint8_t addr[16])
{
	uint64_t h = rl->seed;
	for (int i = 0; i < 16; i++)
		h = (h ^ addr[i]) * 0x100000001b3ull;
	return (size_t)(h % (RL_SLOTS / RL_WAYS)) * RL_WAYS;
}

/* The address's slot, refilled to now; a new one (replacing the least
 * recently used of its bucket) when absent and create is set. */
static struct slot *find(struct ratelimit *rl, const uint8_t addr[16], uint64_t now, bool create)
{
	size_t b = bucket(rl, addr);
	struct slot *victim = &rl->slots[b];
	for (size_t i = b; i < b + RL_WAYS; i++) {
		struct slot *s = &rl->slots[i];
		if (s->last_ms && !memcmp(s->addr, addr, 16)) {
			if (now > s->last_ms) {
				s->tokens += (double)(now - s->last_ms) / rl->per_ms;
				if (s->tokens > rl->burst)
					s->tokens = rl->burst;
				s->last_ms = now;
			}
			return s;
		}
		if (s->last_ms < victim->last_ms)
			victim = s;
	}
	if (!create)
		return NULL;
	memcpy(victim->addr, addr, 16);
	victim->tokens = rl->burst;
	victim->last_ms = now ? now : 1;
	return victim;
}

bool ratelimit_allow(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms)
{
	struct slot *s = find(rl, addr, now_ms, false);
	return !s || s->tokens >= 1.0;
}

void ratelimit_fail(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms)
{
	struct slot *s = find(rl, addr, now_ms, true);
	if (s->tokens >= 1.0)
		s->tokens -= 1.0;
}
