#include "admit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct slot {
	uint64_t device; /* 0: free */
	size_t held;
};

struct admit {
	size_t max_inflight, per_device;
	size_t held;
	size_t mask;       /* slots - 1; a power of two, at least twice the devices */
	unsigned used, max_used;
	struct slot slots[];
};

int admit_new(size_t max_inflight, size_t per_device, unsigned max_devices, struct admit **ret)
{
	size_t n = 16;
	while (n < (size_t)max_devices * 2)
		n *= 2;
	struct admit *a = calloc(1, sizeof(*a) + n * sizeof(struct slot));
	if (!a)
		return -ENOMEM;
	a->max_inflight = max_inflight;
	a->per_device = per_device;
	a->mask = n - 1;
	a->max_used = max_devices;
	*ret = a;
	return 0;
}

void admit_free(struct admit *a)
{
	free(a);
}

static size_t admit__hash(const struct admit *a, uint64_t device)
{
	device ^= device >> 33;
	device *= 0xff51afd7ed558ccdull;
	device ^= device >> 33;
	return (size_t)device & a->mask;
}

/* Linear probing: the device's slot, or the free one where it would go. */
static struct slot *admit__find(struct admit *a, uint64_t device)
{
	size_t i = admit__hash(a, device);
	while (a->slots[i].device && a->slots[i].device != device)
		i = (i + 1) & a->mask;
	return &a->slots[i];
}

/* Removes a slot, moving later ones of the same run back so that every
 * device stays reachable from its hash without tombstones. */
static void admit__remove(struct admit *a, struct slot *s)
{
	size_t i = (size_t)(s - a->slots), j = i;
	a->slots[i].device = 0;
	a->used--;
	for (;;) {
		j = (j + 1) & a->mask;
		if (!a->slots[j].device)
			return;
		size_t k = admit__hash(a, a->slots[j].device);
		/* j's entry may move to i if its home k is not in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		a->slots[i] = a->slots[j];
		a->slots[j].device = 0;
		i = j;
	}
}

bool admit_charge(struct admit *a, uint64_t device, size_t n)
{
	if (!n)
		return true;
	if (device) {
		struct slot *s = admit__find(a, device);
		if (!s->device) {
			if (a->used >= a->max_used || n > a->per_device)
				return false;
			s->device = device;
			s->held = 0;
			a->used++;
		} else if (s->held + n > a->per_device) {
			return false;
		}
		s->held += n;
	}
	a->held += n;
	return true;
}

void admit_release(struct admit *a, uint64_t device, size_t n)
{
	if (!n)
		return;
	a->held -= n;
	if (!device)
		return;
	struct slot *s = admit__find(a, device);
	if (!s->device)
		return;
	s->held -= n;
	if (!s->held)
		admit__remove(a, s);
}

size_t admit_held(const struct admit *a)
{
	return a->held;
}

bool admit_full(const struct admit *a)
{
	return a->held >= a->max_inflight;
}

int admit_is_push(const char *p, size_t n)
{
	static const char push[] = "POST /v1/push";
	size_t m = sizeof(push) - 1;
	if (memcmp(p, push, n < m ? n : m))
		return 0;
	return n < m ? -1 : 1;
}
