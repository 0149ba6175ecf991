#include "auth.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "form.h"
#include "scope.h"

void auth_token_hash(const char *token, size_t len, uint8_t out[32])
{
	static const uint8_t domain[] = "shahidi token v1";
	crypto_generichash(out, 32, (const uint8_t *)token, len, domain, sizeof(domain) - 1);
}

int auth_enrol(struct store_txn *t, const struct auth_enrol *e, uint64_t now_ms,
	       uint64_t *ret_id, char *token, char *err, size_t errlen)
{
	const char *county = e->county ? e->county : "";
	size_t nlen = e->name ? strlen(e->name) : 0;
	if (nlen == 0 || nlen > 100 || !form_utf8_ok((const uint8_t *)e->name, nlen)) {
		snprintf(err, errlen, "a device name is 1 to 100 bytes of UTF-8");
		return -EINVAL;
	}
	/* A coordinator may cover several counties: "042,047". */
	char list[SCOPE_COUNTIES][4];
	size_t n_list = 0;
	for (const char *p = county; *p;) {
		size_t len = strcspn(p, ",");
		char code[8];
		snprintf(code, sizeof(code), "%.*s", (int)(len < 7 ? len : 7), p);
		if (scope_county_number(code) < 0 || n_list == SCOPE_COUNTIES ||
		    (n_list && e->role != ROLE_COORDINATOR)) {
			snprintf(err, errlen, "county must be a code from 001 to 047%s",
				 e->role == ROLE_COORDINATOR ? " (several: 042,047)" : "");
			return -EINVAL;
		}
		memcpy(list[n_list++], code, 4);
		p += len + (p[len] == ',');
	}
	if (e->role < ROLE_DEVICE || e->role > ROLE_METRICS) {
		snprintf(err, errlen, "role must be device, coordinator, admin or metrics");
		return -EINVAL;
	}
	/* It sees no county's data: a county would suggest otherwise. */
	if (e->role == ROLE_METRICS && *county) {
		snprintf(err, errlen, "a metrics token has no county");
		return -EINVAL;
	}
	if (e->role == ROLE_DEVICE && !*county) {
		snprintf(err, errlen, "a device needs its county");
		return -EINVAL;
	}

	struct arena *a = arena_new();
	if (!a)
		return -ENOMEM;
	uint64_t id;
	store_device_t *existing;
	int r = 0;
	do {
		randombytes_buf(&id, sizeof(id));
	} while (id == 0 || (r = store_device_get(t, a, id, &existing)) == 0);
	if (r != -ENOENT)
		goto out;

	uint8_t secret[32], hash[32];
	char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
	randombytes_buf(secret, sizeof(secret));
	sodium_bin2base64(b64, sizeof(b64), secret, sizeof(secret),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char tok[AUTH_TOKEN_LEN + 1];
	snprintf(tok, sizeof(tok), "shd_%s", b64);
	auth_token_hash(tok, strlen(tok), hash);
	sodium_memzero(secret, sizeof(secret));

	store_device_t d = SHAHIDI__STORE__V1__DEVICE__INIT;
	char *cptr[SCOPE_COUNTIES];
	d.id = id;
	d.name = (char *)e->name;
	d.county = n_list == 1 ? list[0] : "";
	for (size_t i = 0; i < n_list; i++)
		cptr[i] = list[i];
	d.counties = n_list > 1 || e->role == ROLE_COORDINATOR ? cptr : NULL;
	d.n_counties = d.counties ? n_list : 0;
	d.role = e->role;
	d.token_hash.data = hash;
	d.token_hash.len = 32;
	d.enrolled_ms = now_ms;
	if ((r = store_device_put(t, &d)) < 0 || (r = store_token_put(t, hash, id)) < 0)
		goto out;
	*ret_id = id;
	memcpy(token, tok, sizeof(tok));
	sodium_memzero(tok, sizeof(tok));
	r = 0;
out:
	arena_free(a);
	return r;
}

int auth_revoke(struct store_txn *t, uint64_t id, uint64_t now_ms)
{
	struct arena *a = arena_new();
	store_device_t *d;
	if (!a)
		return -ENOMEM;
	int r = store_device_get(t, a, id, &d);
	if (r < 0)
		goto out;
	if (d->token_hash.len == 32 && (r = store_token_del(t, d->token_hash.data)) < 0)
		goto out;
	if (!d->revoked) {
		d->revoked = true;
		d->revoked_ms = now_ms;
	}
	r = store_device_put(t, d);
out:
	arena_free(a);
	return r;
}

int auth_check(struct store_txn *t, struct arena *a, const char *token, size_t len,
	       store_device_t **ret)
{
	uint8_t hash[32];
	uint64_t id;
	store_device_t *d;

	if (len != AUTH_TOKEN_LEN || memcmp(token, "shd_", 4))
		return -EACCES;
	auth_token_hash(token, len, hash);
	if (store_token_lookup(t, hash, &id) < 0)
		return -EACCES;
	if (store_device_get(t, a, id, &d) < 0)
		return -EACCES;
	if (d->revoked || d->token_hash.len != 32 || sodium_memcmp(d->token_hash.data, hash, 32))
		return -EACCES;
	*ret = d;
	return 0;
}

struct enrol_ctx {
	const struct auth_enrol *e;
	uint64_t now_ms, id;
	char token[AUTH_TOKEN_LEN + 1];
	char *err;
	size_t errlen;
};

static int enrol_fn(struct store_txn *t, void *ud)
{
	struct enrol_ctx *c = ud;
	return auth_enrol(t, c->e, c->now_ms, &c->id, c->token, c->err, c->errlen);
}

int auth_enrol_store(struct store *s, const struct auth_enrol *e, uint64_t now_ms,
		     uint64_t *ret_id, char *token, char *err, size_t errlen)
{
	struct enrol_ctx c = {.e = e, .now_ms = now_ms, .err = err, .errlen = errlen};
	int r = store_write(s, enrol_fn, &c);
	if (r == 0) {
		*ret_id = c.id;
		memcpy(token, c.token, sizeof(c.token));
	}
	sodium_memzero(c.token, sizeof(c.token));
	return r;
}

struct auth_cache_item {
	uint8_t hash[32];
	struct auth_entry e;
};

struct auth_cache {
	uint64_t stamp, seq;
	size_t n, cap;
	struct auth_cache_item *items; /* sorted by hash */
};

static int auth__item_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32); /* the hash comes first */
}

int auth_cache_build(struct store_txn *t, struct auth_cache **ret)
{
	static _Atomic uint64_t builds;
	struct auth_cache *c = calloc(1, sizeof(*c));
	struct arena *a = arena_new();
	uint64_t id = 0;
	store_device_t *d;
	int r = -ENOMEM;
	if (!c || !a)
		goto fail;
	while ((r = store_device_next(t, a, &id, &d)) == 1) {
		if (!d->revoked && d->token_hash.len == 32) {
			uint64_t found;
			/* as auth_check: the token index names the device */
			if (store_token_lookup(t, d->token_hash.data, &found) < 0 || found != d->id) {
				arena_reset(a);
				continue;
			}
			if (c->n == c->cap) {
				size_t cap = c->cap ? c->cap * 2 : 64;
				struct auth_cache_item *p = realloc(c->items, cap * sizeof(*p));
				if (!p) {
					r = -ENOMEM;
					goto fail;
				}
				c->items = p;
				c->cap = cap;
			}
			struct auth_cache_item *it = &c->items[c->n++];
			memset(it, 0, sizeof(*it));
			memcpy(it->hash, d->token_hash.data, 32);
			it->e.id = d->id;
			it->e.role = d->role;
			snprintf(it->e.county, sizeof(it->e.county), "%s", d->county ? d->county : "");
			it->e.scope = scope_of_device(d);
		}
		arena_reset(a);
	}
	if (r < 0)
		goto fail;
	if (c->n)
		qsort(c->items, c->n, sizeof(*c->items), auth__item_cmp);
	c->stamp = store_txn_others_writes(t);
	c->seq = ++builds;
	arena_free(a);
	*ret = c;
	return 0;
fail:
	arena_free(a);
	auth_cache_free(c);
	return r;
}

int auth_cache_check(const struct auth_cache *c, const char *token, size_t len,
		     const struct auth_entry **ret)
{
	uint8_t hash[32];
	if (!c || !c->n || len != AUTH_TOKEN_LEN || memcmp(token, "shd_", 4))
		return -EACCES;
	auth_token_hash(token, len, hash);
	const struct auth_cache_item *it = bsearch(hash, c->items, c->n, sizeof(*c->items),
						   auth__item_cmp);
	if (!it || sodium_memcmp(it->hash, hash, 32))
		return -EACCES;
	*ret = &it->e;
	return 0;
}

uint64_t auth_cache_stamp(const struct auth_cache *c)
{
	return c->stamp;
}

uint64_t auth_cache_seq(const struct auth_cache *c)
{
	return c->seq;
}

void auth_cache_free(struct auth_cache *c)
{
	if (!c)
		return;
	free(c->items);
	free(c);
}
