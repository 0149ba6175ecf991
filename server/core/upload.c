/* upload: attachments' references, uploads and complete files in the
 * store's "files" table (see upload.h; key layout in store.c). */
#include "upload.h"
#include "apply.h"
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "codec.h"
#include "fields.h"
#include "form.h"
#include "common.h"
#include "merge.h"

#define K_REF 'r'
#define K_UPLOAD 'u'
#define K_FILE 'h'
#define K_GONE 'g' /* a file id whose every record was erased */

static void copy_media(char out[UPLOAD_MEDIA_MAX], const uint8_t *p, size_t n)
{
	n = n < UPLOAD_MEDIA_MAX - 1 ? n : UPLOAD_MEDIA_MAX - 1;
	memcpy(out, p, n);
	out[n] = 0;
}

/* ---- references ---- */

/* Reads an Attachment message (already checked by form.c at push). */
static int parse_attachment(const uint8_t *p, size_t n, struct upload_ref *ref)
{
	struct pb_field f;
	size_t pos = 0;
	int r;
	bool id = false, sha = false;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number == ATTACHMENT_FILE_ID && f.wire_type == 2 && f.len == 16) {
			memcpy(ref->file_id, f.data, 16);
			id = true;
		} else if (f.number == ATTACHMENT_SHA256 && f.wire_type == 2 && f.len == 32) {
			memcpy(ref->sha256, f.data, 32);
			sha = true;
		} else if (f.number == ATTACHMENT_SIZE && f.wire_type == 0) {
			ref->size = f.varint;
		} else if (f.number == ATTACHMENT_MEDIA_TYPE && f.wire_type == 2) {
			copy_media(ref->media_type, f.data, f.len);
		}
	}
	return r < 0 || !id || !sha ? -EPROTO : 0;
}

static int ref_put(struct store_txn *t, const struct upload_ref *ref)
{
	uint8_t k[1 + 16 + 8 + 4], v[16 + 32 + 24 + UPLOAD_MEDIA_MAX];
	k[0] = K_REF;
	memcpy(k + 1, ref->file_id, 16);
	sh_put_be64(k + 17, ref->record_seq);
	sh_put_be32(k + 25, ref->field);
	size_t ml = strlen(ref->media_type);
	memcpy(v, ref->record_id, 16);
	memcpy(v + 16, ref->sha256, 32);
	sh_put_be64(v + 48, ref->size);
	sh_put_be64(v + 56, ref->pusher);
	sh_put_be64(v + 64, ref->noted_ms);
	memcpy(v + 72, ref->media_type, ml);
	return st_put_raw(t, DB_FILES, k, sizeof(k), v, 72 + ml, 0);
}

int upload_note_change(struct store_txn *t, const struct store_change *c, uint64_t record_seq,
		       uint64_t now_ms)
{
	if (c->no_attachments)
		return 0;
	for (size_t i = 0; i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		if (!upload_value_is_attachment(w->value, w->value_len))
			continue;
		struct pb_field f;
		size_t pos = 0;
		if (codec_pb_next(w->value, w->value_len, &pos, &f) <= 0 || f.number != FT_ATTACHMENT ||
		    f.wire_type != 2)
			continue;
		struct upload_ref ref = {.record_seq = record_seq, .field = w->field,
					 .pusher = c->pusher, .noted_ms = now_ms};
		memcpy(ref.record_id, c->record_id, 16);
		if (parse_attachment(f.data, f.len, &ref) < 0)
			continue; /* form.c refuses these at push: not a reference */
		int r = ref_put(t, &ref);
		if (r < 0)
			return r;
	}
	return 0;
}

static int ref_read(const MDB_val *k, const MDB_val *v, struct upload_ref *ref)
{
	if (k->mv_size != 29 || v->mv_size < 72)
		return -EIO;
	const uint8_t *kp = k->mv_data, *vp = v->mv_data;
	memset(ref, 0, sizeof(*ref));
	memcpy(ref->file_id, kp + 1, 16);
	ref->record_seq = sh_get_be64(kp + 17);
	ref->field = sh_get_be32(kp + 25);
	memcpy(ref->record_id, vp, 16);
	memcpy(ref->sha256, vp + 16, 32);
	ref->size = sh_get_be64(vp + 48);
	ref->pusher = sh_get_be64(vp + 56);
	ref->noted_ms = sh_get_be64(vp + 64);
	copy_media(ref->media_type, vp + 72, v->mv_size - 72);
	return 0;
}

/* Every entry whose key starts with prefix. */
static int scan(struct store_txn *t, const uint8_t *prefix, size_t plen,
		int (*each)(const MDB_val *k, const MDB_val *v, void *ud), void *ud)
{
	if (t->s->files_absent)
		return 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_FILES], &cur);
	if (rc)
		return st_lmdb_err(rc);
	MDB_val k = val_of(prefix, plen), v;
	int r = 0;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (!rc && k.mv_size >= plen && !memcmp(k.mv_data, prefix, plen)) {
		if ((r = each(&k, &v, ud)) != 0)
			break;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (r)
		return r;
	return rc && rc != MDB_NOTFOUND ? st_lmdb_err(rc) : 0;
}

struct ref_scan {
	int (*fn)(const struct upload_ref *ref, void *ud);
	void *ud;
};

static int ref_each(const MDB_val *k, const MDB_val *v, void *ud)
{
	struct ref_scan *s = ud;
	struct upload_ref ref;
	int r = ref_read(k, v, &ref);
	return r < 0 ? r : s->fn(&ref, s->ud);
}

int upload_refs(struct store_txn *t, const uint8_t file_id[16],
		int (*fn)(const struct upload_ref *ref, void *ud), void *ud)
{
	uint8_t p[17] = {K_REF};
	memcpy(p + 1, file_id, 16);
	struct ref_scan s = {fn, ud};
	return scan(t, p, sizeof(p), ref_each, &s);
}

int upload_refs_all(struct store_txn *t, int (*fn)(const struct upload_ref *ref, void *ud),
		    void *ud)
{
	uint8_t p[1] = {K_REF};
	struct ref_scan s = {fn, ud};
	return scan(t, p, 1, ref_each, &s);
}

int upload_refs_after(struct store_txn *t, const struct upload_ref *after,
		      int (*fn)(const struct upload_ref *ref, void *ud), void *ud)
{
	if (!after)
		return upload_refs_all(t, fn, ud);
	if (t->s->files_absent)
		return 0;
	/* the key after after's: its own key with one more byte sorts right
	 * after it and before every longer one's successor */
	uint8_t k0[1 + 16 + 8 + 4 + 1];
	k0[0] = K_REF;
	memcpy(k0 + 1, after->file_id, 16);
	sh_put_be64(k0 + 17, after->record_seq);
	sh_put_be32(k0 + 25, after->field);
	k0[29] = 0;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t->txn, t->s->dbi[DB_FILES], &cur);
	if (rc)
		return st_lmdb_err(rc);
	MDB_val k = val_of(k0, sizeof(k0)), v;
	struct ref_scan s = {fn, ud};
	int r = 0;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (!rc && k.mv_size >= 1 && *(const uint8_t *)k.mv_data == K_REF) {
		if ((r = ref_each(&k, &v, &s)) != 0)
			break;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (r)
		return r;
	return rc && rc != MDB_NOTFOUND ? st_lmdb_err(rc) : 0;
}

/* ---- uploads in progress ---- */

static int get(struct store_txn *t, uint8_t kind, const uint8_t *id, size_t n, MDB_val *v)
{
	if (t->s->files_absent)
		return -ENOENT;
	uint8_t k[33];
	k[0] = kind;
	memcpy(k + 1, id, n);
	return st_get_raw(t, DB_FILES, k, 1 + n, v);
}

static void upload_read(const uint8_t *id, const MDB_val *v, struct upload_state *ret)
{
	const uint8_t *p = v->mv_data;
	uint8_t key[16];
	memcpy(key, id, 16); /* id may be ret->file_id */
	memset(ret, 0, sizeof(*ret));
	memcpy(ret->file_id, key, 16);
	memcpy(ret->sha256, p, 32);
	ret->length = sh_get_be64(p + 32);
	ret->offset = sh_get_be64(p + 40);
	ret->device = sh_get_be64(p + 48);
	ret->created_ms = sh_get_be64(p + 56);
	ret->expires_ms = sh_get_be64(p + 64);
	copy_media(ret->media_type, p + 72, v->mv_size - 72);
}

int upload_get(struct store_txn *t, const uint8_t file_id[16], struct upload_state *ret)
{
	MDB_val v;
	int r = get(t, K_UPLOAD, file_id, 16, &v);
	if (r < 0)
		return r;
	if (v.mv_size < 72)
		return -EIO;
	upload_read(file_id, &v, ret);
	return 0;
}

int upload_put(struct store_txn *t, const struct upload_state *u)
{
	uint8_t k[17] = {K_UPLOAD}, v[72 + UPLOAD_MEDIA_MAX];
	memcpy(k + 1, u->file_id, 16);
	size_t ml = strlen(u->media_type);
	memcpy(v, u->sha256, 32);
	sh_put_be64(v + 32, u->length);
	sh_put_be64(v + 40, u->offset);
	sh_put_be64(v + 48, u->device);
	sh_put_be64(v + 56, u->created_ms);
	sh_put_be64(v + 64, u->expires_ms);
	memcpy(v + 72, u->media_type, ml);
	return st_put_raw(t, DB_FILES, k, sizeof(k), v, 72 + ml, 0);
}

int upload_del(struct store_txn *t, const uint8_t file_id[16])
{
	uint8_t k[17] = {K_UPLOAD};
	memcpy(k + 1, file_id, 16);
	return st_del_raw(t, DB_FILES, k, sizeof(k));
}

struct upload_scan {
	int (*fn)(const struct upload_state *u, void *ud);
	void *ud;
};

static int upload_each(const MDB_val *k, const MDB_val *v, void *ud)
{
	struct upload_scan *s = ud;
	struct upload_state u;
	if (k->mv_size != 17 || v->mv_size < 72)
		return -EIO;
	upload_read((const uint8_t *)k->mv_data + 1, v, &u);
	return s->fn(&u, s->ud);
}

int upload_all(struct store_txn *t, int (*fn)(const struct upload_state *u, void *ud), void *ud)
{
	uint8_t p[1] = {K_UPLOAD};
	struct upload_scan s = {fn, ud};
	return scan(t, p, 1, upload_each, &s);
}

/* ---- complete files ---- */

int upload_file_get(struct store_txn *t, const uint8_t sha256[32], struct upload_file *ret)
{
	MDB_val v;
	int r = get(t, K_FILE, sha256, 32, &v);
	if (r < 0)
		return r;
	if (v.mv_size != 40)
		return -EIO;
	const uint8_t *p = v.mv_data;
	memcpy(ret->sha256, sha256, 32);
	ret->size = sh_get_be64(p);
	ret->received_ms = sh_get_be64(p + 8);
	ret->device = sh_get_be64(p + 16);
	memcpy(ret->file_id, p + 24, 16);
	return 0;
}

int upload_file_put(struct store_txn *t, const struct upload_file *f)
{
	uint8_t k[33] = {K_FILE}, v[40];
	memcpy(k + 1, f->sha256, 32);
	sh_put_be64(v, f->size);
	sh_put_be64(v + 8, f->received_ms);
	sh_put_be64(v + 16, f->device);
	memcpy(v + 24, f->file_id, 16);
	return st_put_raw(t, DB_FILES, k, sizeof(k), v, sizeof(v), 0);
}

int upload_file_del(struct store_txn *t, const uint8_t sha256[32])
{
	uint8_t k[33] = {K_FILE};
	memcpy(k + 1, sha256, 32);
	return st_del_raw(t, DB_FILES, k, sizeof(k));
}

/* ---- erasure ---- */

int upload_gone_get(struct store_txn *t, const uint8_t file_id[16], uint64_t *ret_ms)
{
	MDB_val v;
	int r = get(t, K_GONE, file_id, 16, &v);
	if (r < 0)
		return r;
	if (v.mv_size != 8)
		return -EIO;
	*ret_ms = sh_get_be64(v.mv_data);
	return 0;
}

static int gone_put(struct store_txn *t, const uint8_t file_id[16], uint64_t ms)
{
	uint8_t k[17] = {K_GONE}, v[8];
	memcpy(k + 1, file_id, 16);
	sh_put_be64(v, ms);
	return st_put_raw(t, DB_FILES, k, sizeof(k), v, sizeof(v), 0);
}

static int ref_del(struct store_txn *t, const struct upload_ref *ref)
{
	uint8_t k[1 + 16 + 8 + 4];
	k[0] = K_REF;
	memcpy(k + 1, ref->file_id, 16);
	sh_put_be64(k + 17, ref->record_seq);
	sh_put_be32(k + 25, ref->field);
	return st_del_raw(t, DB_FILES, k, sizeof(k));
}

/* The references of one record, copied out (no cursor open while they go). */
struct mine {
	const uint8_t *record_id;
	struct upload_ref *refs; /* malloc'd */
	size_t n, cap;
};

static int mine_each(const struct upload_ref *ref, void *ud)
{
	struct mine *m = ud;
	if (memcmp(ref->record_id, m->record_id, 16))
		return 0;
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 8;
		struct upload_ref *n = realloc(m->refs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		m->refs = n;
		m->cap = cap;
	}
	m->refs[m->n++] = *ref;
	return 0;
}

/* Is there a reference, by file id or by hash, from a record that is
 * not erased (and not the one being erased)? */
struct live {
	struct store_txn *t;
	struct arena *a;
	const uint8_t *record_id, *sha256; /* sha256 NULL: any reference */
	bool found;
};

static int live_each(const struct upload_ref *ref, void *ud)
{
	struct live *l = ud;
	merge_rec_t *rec;
	if (!memcmp(ref->record_id, l->record_id, 16) ||
	    (l->sha256 && memcmp(ref->sha256, l->sha256, 32)))
		return 0;
	arena_reset(l->a);
	int r = store_record_get(l->t, l->a, ref->record_id, &rec);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (rec->erased_ms)
		return 0;
	l->found = true;
	return 1;
}

static int live_ref(struct store_txn *t, struct arena *a, const uint8_t record_id[16],
		    const uint8_t *file_id, const uint8_t *sha256, bool *ret)
{
	struct live l = {.t = t, .a = a, .record_id = record_id, .sha256 = sha256};
	int r = file_id ? upload_refs(t, file_id, live_each, &l)
			: upload_refs_all(t, live_each, &l);
	if (r < 0)
		return r;
	*ret = l.found;
	return 0;
}

int upload_erase_record(struct store_txn *t, const uint8_t record_id[16], uint64_t now_ms,
			struct upload_erased *ret)
{
	struct upload_erased e = {0};
	struct mine m = {.record_id = record_id};
	struct arena *a = arena_new();
	int r = a ? upload_refs_all(t, mine_each, &m) : -ENOMEM;
	for (size_t i = 0; r >= 0 && i < m.n; i++)
		r = ref_del(t, &m.refs[i]);
	e.references = m.n;
	for (size_t i = 0; r >= 0 && i < m.n; i++) {
		const struct upload_ref *ref = &m.refs[i];
		bool seen_id = false, seen_sha = false, live;
		for (size_t j = 0; j < i; j++) {
			seen_id |= !memcmp(m.refs[j].file_id, ref->file_id, 16);
			seen_sha |= !memcmp(m.refs[j].sha256, ref->sha256, 32);
		}
		/* the file id: its upload in progress goes, unless a record not
		 * erased names the same id; a marker says it was erased (410) */
		if (!seen_id && (r = live_ref(t, a, record_id, ref->file_id, NULL, &live)) >= 0 &&
		    !live) {
			struct upload_state u;
			if ((r = upload_get(t, ref->file_id, &u)) == 0) {
				e.uploads_dropped++;
				r = upload_del(t, ref->file_id);
			} else if (r == -ENOENT) {
				r = 0;
			}
			if (r >= 0)
				r = gone_put(t, ref->file_id, now_ms);
		}
		/* the bytes, by hash: kept while a record not erased names them */
		struct upload_file f;
		if (r >= 0 && !seen_sha && (r = upload_file_get(t, ref->sha256, &f)) == -ENOENT) {
			r = 0; /* never received: nothing to remove */
		} else if (r >= 0 && !seen_sha &&
			   (r = live_ref(t, a, record_id, NULL, ref->sha256, &live)) >= 0) {
			if (live) {
				e.files_kept++;
			} else {
				e.files_removed++;
				r = upload_file_del(t, ref->sha256);
			}
		}
	}
	free(m.refs);
	arena_free(a);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}
