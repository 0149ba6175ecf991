/* auth: device tokens and roles.
 *
 * A token is "shd_" followed by 43 base64url characters (32 random bytes).
 * Only its BLAKE2b-256 hash is stored; a token is shown once, at
 * enrolment. Tokens carry 256 bits of entropy, so a fast hash is enough
 * (no password stretching is needed) and the lookup by hash reveals
 * nothing useful through timing; the found hash is still compared in
 * constant time.
 */
#ifndef SHAHIDI_AUTH_H
#define SHAHIDI_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scope.h"
#include "store.h"

#define AUTH_TOKEN_LEN 47 /* "shd_" + 43 */

struct auth_enrol {
	const char *name;     /* 1..100 bytes of UTF-8 */
	const char *county;   /* "001".."047", or NULL/"" for none */
	uint32_t role;        /* ROLE_* */
	bool qr;              /* the token also leaves as a QR code (qr.h): noted
				 in the audit entry, nothing else */
};

/* Enrols a device in a write transaction: writes its record and its token
 * hash. *ret_id is its new id and token (AUTH_TOKEN_LEN + 1 bytes) the
 * token to hand over, once. -EINVAL with err filled for bad arguments. */
int auth_enrol(struct store_txn *t, const struct auth_enrol *e, uint64_t now_ms,
	       uint64_t *ret_id, char *token, char *err, size_t errlen);

/* auth_enrol in a write transaction of its own (store_write: retried after
 * map growth). Same returns. */
int auth_enrol_store(struct store *s, const struct auth_enrol *e, uint64_t now_ms,
		     uint64_t *ret_id, char *token, char *err, size_t errlen);

/* Revokes a device: its token stops working at the next request. 0,
 * -ENOENT. Revoking twice is fine. */
int auth_revoke(struct store_txn *t, uint64_t id, uint64_t now_ms);

/* The device a bearer token belongs to: 0 with *ret filled (in a), or
 * -EACCES for a missing, malformed, unknown or revoked token: callers
 * must not tell these apart in what they answer. */
int auth_check(struct store_txn *t, struct arena *a, const char *token, size_t len,
	       store_device_t **ret);

void auth_token_hash(const char *token, size_t len, uint8_t out[32]);

/* A snapshot of every working token, so that a token is checked without
 * a transaction (on the server's event loop). Built in a write
 * transaction; read-only afterwards, so any thread may read it. It is
 * current while store_others_writes() equals auth_cache_stamp(): the
 * server's own enrolments and revocations build a new one in their
 * transaction; another process's writes change that number. */
struct auth_cache;

struct auth_entry {
	uint64_t id;
	uint32_t role;
	char county[4];
	struct scope scope;   /* scope_of_device() */
};

/* Builds the cache of the devices in the store, as t sees them. */
int auth_cache_build(struct store_txn *t, struct auth_cache **ret);
/* auth_check against the cache: 0 with *ret pointing into c (valid as long
 * as c is), or -EACCES, the same for every kind of refusal. */
int auth_cache_check(const struct auth_cache *c, const char *token, size_t len,
		     const struct auth_entry **ret);
/* store_txn_others_writes() of the transaction it was built in. */
uint64_t auth_cache_stamp(const struct auth_cache *c);
/* Builds are numbered in the order they were made: of two caches, the one
 * with the higher number saw every write the other saw. */
uint64_t auth_cache_seq(const struct auth_cache *c);
/* NULL is a no-op. */
void auth_cache_free(struct auth_cache *c);

#endif
