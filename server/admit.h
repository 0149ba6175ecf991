/* admit: what request bodies may hold, charged by the bytes that arrived.
 *
 * A request's Content-Length is a claim, not a cost: a client can claim
 * 16 MiB and send a byte a second. So the in-flight budget
 * (--max-inflight) is charged as body bytes arrive, never from the claim,
 * and each device has a share of its own (a quarter of the budget, at
 * least one --max-body): one token, however many connections it opens,
 * cannot hold more than that. Requests other than pushes (/healthz,
 * pulls, the office) have their own places in the queue, so that pushes
 * waiting for the writer never hold them back.
 *
 * Loop thread only. Memory: one table sized at creation, never grown.
 */
#ifndef SHAHIDI_ADMIT_H
#define SHAHIDI_ADMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct admit;

/* A table for up to max_devices devices holding bytes at once (more are
 * refused, as over their share). *ret is freed with admit_free. */
int admit_new(size_t max_inflight, size_t per_device, unsigned max_devices, struct admit **ret);
void admit_free(struct admit *a);

/* Charges n body bytes that arrived for device (0: a request with no
 * device, charged to the budget only). false, charging nothing, when the
 * device would hold more than its share. */
bool admit_charge(struct admit *a, uint64_t device, size_t n);
/* Gives back n bytes charged for device. */
void admit_release(struct admit *a, uint64_t device, size_t n);
/* Bytes held now, by everyone. */
size_t admit_held(const struct admit *a);
/* Is the budget spent (new bodies must wait)? */
bool admit_full(const struct admit *a);

/* Is a request starting with these n bytes a push (POST /v1/push)?
 * 1 yes, 0 no, -1 too few bytes to tell. */
int admit_is_push(const char *p, size_t n);

#endif
