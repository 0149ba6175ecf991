/* devices: devices and their tokens, batch memos, the audit log. */
#include "store_int.h"

#include <errno.h>
#include <string.h>


#include "arena.h"
#include "common.h"

int store_memo_get(struct store_txn *t, struct arena *a, uint64_t device, uint64_t batch_seq,
		   store_memo_t **ret)
{
	uint8_t k[16];
	sh_put_be64(k, device);
	sh_put_be64(k + 8, batch_seq);
	return st_get_pb(t, a, DB_BAT, k, 16, &shahidi__store__v1__batch_memo__descriptor,
		      (void **)ret);
}

int store_memo_put(struct store_txn *t, uint64_t device, uint64_t batch_seq,
		   const store_memo_t *m)
{
	uint8_t k[16];
	sh_put_be64(k, device);
	sh_put_be64(k + 8, batch_seq);
	return st_put_pb(t, DB_BAT, k, 16, &m->base, 0);
}

/* ---- devices ---- */

static const char *const role_names[] = {[ROLE_DEVICE] = "device",
					 [ROLE_COORDINATOR] = "coordinator",
					 [ROLE_ADMIN] = "admin",
					 [ROLE_METRICS] = "metrics"};

const char *store_role_name(uint32_t role)
{
	return role >= ROLE_DEVICE && role <= ROLE_METRICS ? role_names[role] : "unknown";
}

int store_role_parse(const char *s, uint32_t *ret)
{
	for (uint32_t r = ROLE_DEVICE; r <= ROLE_METRICS; r++)
		if (!strcmp(s, role_names[r])) {
			*ret = r;
			return 0;
		}
	return -EINVAL;
}

int store_device_get(struct store_txn *t, struct arena *a, uint64_t id, store_device_t **ret)
{
	uint8_t k[8];
	sh_put_be64(k, id);
	return st_get_pb(t, a, DB_DEV, k, 8, &shahidi__store__v1__device__descriptor, (void **)ret);
}

int store_device_put(struct store_txn *t, const store_device_t *d)
{
	uint8_t k[8];
	sh_put_be64(k, d->id);
	return st_put_pb(t, DB_DEV, k, 8, &d->base, 0);
}

int store_device_next(struct store_txn *t, struct arena *a, uint64_t *id, store_device_t **ret)
{
	MDB_val v;
	uint64_t s = *id;
	int r = st_next_u64_key(t, DB_DEV, &s, &v);
	if (r <= 0)
		return r;
	store_device_t *d = (store_device_t *)protobuf_c_message_unpack(
		&shahidi__store__v1__device__descriptor, arena_pb_allocator(a), v.mv_size, v.mv_data);
	if (!d)
		return -EIO;
	*id = s;
	*ret = d;
	return 1;
}

int store_token_lookup(struct store_txn *t, const uint8_t hash[32], uint64_t *ret_id)
{
	return st_get_u64(t, DB_TOK, hash, 32, ret_id);
}

int store_token_put(struct store_txn *t, const uint8_t hash[32], uint64_t id)
{
	uint8_t v[8];
	sh_put_be64(v, id);
	return st_put_raw(t, DB_TOK, hash, 32, v, 8, 0);
}

int store_token_del(struct store_txn *t, const uint8_t hash[32])
{
	return st_del_raw(t, DB_TOK, hash, 32);
}

/* ---- feeds ---- */

int store_audit_append(struct store_txn *t, const char *json, uint64_t *ret_seq)
{
	MDB_cursor *c;
	MDB_val k, v;
	uint64_t seq = 1;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_AUDIT], &c);
	if (rc)
		return st_lmdb_err(rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		seq = sh_get_be64(k.mv_data) + 1;
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND)
		return st_lmdb_err(rc);
	uint8_t kb[8];
	sh_put_be64(kb, seq);
	int r = st_put_raw(t, DB_AUDIT, kb, 8, json, strlen(json), MDB_APPEND);
	if (r == 0 && ret_seq)
		*ret_seq = seq;
	return r;
}

int store_audit_next(struct store_txn *t, struct arena *a, uint64_t *seq, char **ret_json)
{
	MDB_val v;
	uint64_t s2 = *seq;
	int r = st_next_u64_key(t, DB_AUDIT, &s2, &v);
	if (r <= 0)
		return r;
	char *j = arena_alloc(a, v.mv_size + 1);
	if (!j)
		return -ENOMEM;
	memcpy(j, v.mv_data, v.mv_size);
	j[v.mv_size] = 0;
	*seq = s2;
	*ret_json = j;
	return 1;
}

/* ---- backup ---- */
