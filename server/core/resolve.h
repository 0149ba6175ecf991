/* resolve: changes made at the office, by a coordinator's or an admin's
 * device: resolving a conflict. A resolution is an ordinary change: it is
 * stamped by the server's clock, supersedes every live value it replaces,
 * goes into the hash-chained log as made by the acting device, and flows
 * to every phone that holds the record, like any other change.
 */
#ifndef SHAHIDI_RESOLVE_H
#define SHAHIDI_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "form.h"

struct store_txn;

enum resolve_how {
	RESOLVE_TAKE,    /* keep the live value written by take_device */
	RESOLVE_VALUE,   /* write a new value */
	RESOLVE_DELETED, /* a deletion conflict: deleted (true) or kept (false) */
};

struct resolve_req {
	const uint8_t *record_id;   /* 16 bytes */
	uint32_t field;             /* field number; 0 with RESOLVE_DELETED */
	/* 16 bytes: a field of that repeat-group instance, and with
	 * RESOLVE_DELETED its removal (deleted: removed); NULL: the record's */
	const uint8_t *instance;
	enum resolve_how how;
	uint64_t take_device;
	const uint8_t *value;       /* RESOLVE_VALUE: an encoded Value */
	size_t value_len;
	bool deleted;
};

/* Resolves one open conflict in a write transaction, as device actor.
 * Returns 0 (*ret_log_seq: the change's log entry); -ENOENT when the record
 * does not exist; -EINVAL with *v filled when the request does not fit
 * (no such field, no conflict there, no live value from that device, a
 * value the form refuses). */
int resolve_apply(struct store_txn *t, const struct form_registry *forms, uint64_t actor,
		  const struct resolve_req *q, uint64_t now_ms, struct form_verdict *v,
		  uint64_t *ret_log_seq);

#endif
