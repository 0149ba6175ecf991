/* daily: pushes per county and server day, kept so that the office can
 * see a county going quiet before its phones pass the silent threshold.
 *
 * The counts live in the store's "days" table (key layout in store.c),
 * are added to by sync_apply in the push's own write transaction (so they
 * survive restarts, and a batch replayed from its memo is not counted
 * again), and are keyed by the server's UTC day, never the phone's clock.
 */
#ifndef SHAHIDI_DAILY_H
#define SHAHIDI_DAILY_H

#include <jansson.h>
#include <stdint.h>

#include "scope.h"

struct store;
struct store_txn;

#define DAILY_MS 86400000ull
#define DAILY_MAX_DAYS 366

struct daily_count {
	uint64_t batches;  /* pushes (batches) applied */
	uint64_t applied;  /* changes applied */
	uint64_t rejected; /* changes rejected */
};

/* Adds one push of a phone of county (NULL or "": none) on the server day
 * of now_ms, in the caller's write transaction. */
int daily_note(struct store_txn *t, const char *county, uint64_t now_ms, uint64_t applied,
	       uint64_t rejected);

/* The counts of the days days ending with now_ms's day, for every county
 * in scope that had a push in them, as a JSON object (new reference in
 * *ret):
 *   {"days": N, "from": "YYYY-MM-DD", "to": "YYYY-MM-DD",
 *    "counties": [{"county": "047", "batches": [N numbers, oldest first],
 *                  "applied": [...], "rejected": [...], "total": n}]}
 * counties in code order. days is 1 to DAILY_MAX_DAYS (-EINVAL). One
 * short read transaction. */
int daily_collect(struct store *s, const struct scope *scope, uint64_t now_ms, unsigned days,
		  json_t **ret);

#endif
