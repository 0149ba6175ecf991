/* sync: the push and pull protocol on top of the store.
 *
 * A push is handled in two steps so that the server's writer thread does
 * only store work: sync_decode() inflates, decodes and validates a batch
 * (any thread, no store access), then sync_apply() applies it inside a
 * write transaction that may hold many batches (group commit). The CLI's
 * `ingest` uses the very same two calls.
 */
#ifndef SHAHIDI_SYNC_H
#define SHAHIDI_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "codec.h"
#include "form.h"

struct store_txn;
struct arena;

/* Fields a change may set that its form does not know (a newer app's):
 * with each known field at most once, a change writes at most the form's
 * field count plus this, whatever max_fields says. */
#define SYNC_MAX_UNKNOWN_FIELDS 64u

struct sync_limits {
	size_t max_inflated;  /* bytes of a batch after inflating */
	size_t max_changes;   /* changes per batch */
	size_t max_fields;    /* fields per change */
	size_t max_base;      /* base stamps per field write */
	size_t max_value;     /* bytes of a value of a field the form does not know */
};

/* Sane defaults: 32 MiB inflated, 5000 changes, 512 fields, 64 base stamps,
 * 64 KiB values. */
void sync_limits_default(struct sync_limits *ret);

struct sync_batch;

/* Decodes and validates a push body. On success *ret owns a copy of
 * everything it needs (the body may be freed). Batch-level failures:
 *   -EMSGSIZE  inflates past max_inflated, or more than max_changes (413)
 *   -EPROTO    not a decodable (compressed) PushBatch (400)
 *   -EINVAL    batch fields missing or wrong (400)
 * with *verdict saying what. A bad change does not fail the batch: it gets
 * its own rejection when applied. */
int sync_decode(const struct form_registry *forms, const struct sync_limits *lim,
		const uint8_t *body, size_t len, enum codec_enc enc, uint64_t now_ms,
		struct sync_batch **ret, struct form_verdict *verdict);
void sync_batch_free(struct sync_batch *b);

uint64_t sync_batch_device(const struct sync_batch *b);
uint64_t sync_batch_seq(const struct sync_batch *b);
size_t sync_batch_changes(const struct sync_batch *b);
/* The i-th change as prepared for the store, or NULL when it was rejected
 * (for tests). */
struct store_change *sync_batch_change(struct sync_batch *b, size_t i);

struct sync_result {
	uint32_t applied, duplicate, rejected;
	bool replay;           /* the same batch was received before */
	const uint8_t *response; /* encoded PushResponse; owned by the batch,
				    valid until the next sync_apply or free */
	size_t response_len;
};

/* Applies a decoded batch in a write transaction and updates the pushing
 * device's state. Returns 0; -EEXIST when this batch number was used
 * before with other content (409; nothing changed); -ENOENT when the device
 * is not enrolled; a store error (-ENOSPC: grow and retry the whole
 * transaction). May be called again on the same batch after an abort. */
int sync_apply(struct store_txn *t, struct sync_batch *b, uint64_t now_ms,
	       struct sync_result *ret);

struct sync_pull_info {
	uint32_t changes;
	uint64_t next_cursor;
	bool more;
};

/* A pull page's size, before compression: about what a 2G link moves in
 * a few minutes, and what a cheap phone decodes in one piece. A page ends
 * at the change that crosses it (a change is never split), or at the
 * phone's limit (--pull-limit caps that), whichever comes first. */
#define SYNC_PULL_PAGE_BYTES ((size_t)4 << 20)

/* Appends to out an encoded PullResponse: the device's feed after cursor,
 * at most limit changes and about max_bytes bytes. */
int sync_pull(struct store_txn *t, uint64_t device, uint64_t cursor, uint32_t limit,
	      size_t max_bytes, struct buf *out, struct sync_pull_info *ret);

/* Records that a device pulled up to cursor (its last_pull time and
 * cursor), in a write transaction. */
int sync_note_pull(struct store_txn *t, uint64_t device, uint64_t cursor, uint64_t now_ms);

#endif
