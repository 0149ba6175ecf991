/* Helpers for the unit and property tests: temporary stores, enrolled
 * devices, and changes and batches built with protobuf-c as a phone
 * would. Everything runs through the real library: nothing is mocked. */
#ifndef SHAHIDI_TESTUTIL_H
#define SHAHIDI_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "buf.h"
#include "form.h"
#include "shahidi.pb-c.h"
#include "store.h"
#include "sync.h"

/* A fresh directory under $TMPDIR (or /tmp); removed by tu_rmrf(). */
void tu_tmpdir(char path[256]);
void tu_rmrf(const char *path);

struct store *tu_store_open(const char *dir, const struct store_opts *o);
struct form_registry *tu_forms(bool with_v2);
uint64_t tu_enrol(struct store *s, const char *name, const char *county, uint32_t role,
		  char *token /* AUTH_TOKEN_LEN + 1, or NULL */);

/* Values, allocated in a. */
Shahidi__V1__Value *tu_text(struct arena *a, const char *s);
Shahidi__V1__Value *tu_choice(struct arena *a, const char *code);
Shahidi__V1__Value *tu_int(struct arena *a, int64_t v);
Shahidi__V1__Value *tu_bool(struct arena *a, bool v);
Shahidi__V1__Value *tu_date(struct arena *a, const char *s);

/* A change of record rid with no fields yet. */
Shahidi__V1__Change *tu_change(struct arena *a, const uint8_t rid[16], uint64_t change_id,
			       uint64_t hlc);
/* Adds a field write superseding n_base stamps given as (hlc, device)
 * pairs in base[2 * i], base[2 * i + 1]. value NULL = cleared. */
void tu_set(struct arena *a, Shahidi__V1__Change *c, uint32_t field, Shahidi__V1__Value *value,
	    size_t n_base, const uint64_t *base);
void tu_delete(struct arena *a, Shahidi__V1__Change *c, bool deleted, size_t n_base,
	       const uint64_t *base);
/* A valid new incident report (all required fields), as gen_report. */
Shahidi__V1__Change *tu_report(struct arena *a, const struct form_registry *forms, uint64_t seed,
			       uint64_t change_id, uint64_t hlc);

/* Encodes a batch, compressed with enc (CODEC_IDENTITY for none). */
void tu_batch(struct buf *out, uint64_t device, uint64_t batch_seq,
	      Shahidi__V1__Change **changes, size_t n, enum codec_enc enc);

/* Decodes and applies a batch body as the server does. Returns the error
 * of sync_decode or sync_apply; on success *ret_resp (if not NULL) is the
 * unpacked response (free with shahidi__v1__push_response__free_unpacked). */
int tu_push(struct store *s, const struct form_registry *forms, const struct buf *body,
	    Shahidi__V1__PushResponse **ret_resp, struct form_verdict *ret_verdict);

/* One change in a batch of its own from device, which must be applied. */
void tu_push1(struct store *s, const struct form_registry *forms, uint64_t device,
	      uint64_t batch_seq, Shahidi__V1__Change *c);

/* Assigns record rid to device (store_assign, in its own transaction). */
void tu_assign(struct store *s, const uint8_t rid[16], uint64_t device);

/* Records digest and log length: what "the store is unchanged" means. */
struct tu_state {
	uint8_t records[32];
	uint64_t n_records;
	uint64_t log_entries;
	uint8_t head[32];
};
void tu_state(struct store *s, struct tu_state *ret);
bool tu_state_eq(const struct tu_state *a, const struct tu_state *b);

uint64_t tu_now_hlc(void);

#endif
