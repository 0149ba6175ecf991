/* gen: synthetic incident reports for the demo, tests, the device
 * simulator and benchmarks. Deterministic: the same seed gives the same
 * reports, so a failing run can be replayed.
 *
 * Content is made from the form's own vocabularies and limits, with
 * narratives of 500-800 bytes, close to what paralegals write (see
 * shared/reference/performance.md: ~1 KB per report as protobuf).
 */
#ifndef SHAHIDI_GEN_H
#define SHAHIDI_GEN_H

#include <stdint.h>

#include "form.h"
#include "shahidi.pb-c.h"

struct arena;

/* splitmix64: small, fast, good enough for simulations. */
struct gen_rng {
	uint64_t s;
};
uint64_t gen_next(struct gen_rng *r);
/* Uniform in [0, n). n > 0. */
uint64_t gen_below(struct gen_rng *r, uint64_t n);

/* A random value for a field, allocated in a. NULL when out of memory. */
Shahidi__V1__Value *gen_value(struct gen_rng *r, struct arena *a, const struct form_field *fd,
			      uint64_t now_ms);

/* Instances of one group a generated report has at most. */
#define GEN_MAX_INSTANCES 3

/* A new report of form f: a create change with every required field and
 * most others set, record id a version 7 UUID at now_ms. A form with
 * repeat groups gets 0-3 instances of each (at least the group's min),
 * each instance id a version 7 UUID, every LINK naming an instance of
 * the report (acts name victims, involvements acts and perpetrators,
 * referrals victims); a group whose link has nothing to name gets none. */
Shahidi__V1__Change *gen_report(struct gen_rng *r, struct arena *a, const struct form *f,
				uint64_t change_id, uint64_t hlc, uint64_t now_ms);

/* A fresh instance id (a version 7 UUID at now_ms). Returns 0. */
int gen_instance_id(struct gen_rng *r, uint64_t now_ms, uint8_t ret_id[16]);
/* A LINK value naming instance id, in a. NULL when out of memory. */
Shahidi__V1__Value *gen_link(struct arena *a, const uint8_t id[16]);

/* An encoded Value, packed into a. */
ProtobufCBinaryData gen_pack_value(struct arena *a, const Shahidi__V1__Value *v);

#endif
