#include "sync.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "arena.h"
#include "common.h"
#include "daily.h"
#include "fields.h"
#include "hlc.h"
#include "merge.h"
#include "shahidi.pb-c.h"
#include "store.h"
#include "uuid.h"
#include "wire.h"

struct prepared {
	struct store_change sc;
	bool rejected;
	struct form_verdict verdict;
};

/* The batch's own fields (shahidi.v1.PushBatch without its changes). */
struct batch_hdr {
	uint64_t device, batch_seq, sent_hlc;
	uint32_t unsent;
	char *app_version;          /* NUL-terminated, in the batch's arena */
};

struct sync_batch {
	struct arena *arena;       /* everything below */
	struct buf body;           /* inflated body; raw bytes point here */
	uint8_t digest[32];        /* of the inflated body */
	struct batch_hdr hdr;
	struct prepared *changes;
	size_t n_changes;
	struct buf response;
	struct arena *scratch;     /* per-apply allocations */
};

void sync_limits_default(struct sync_limits *l)
{
	l->max_inflated = (size_t)32 << 20;
	l->max_changes = 5000;
	l->max_fields = 512;
	l->max_base = 64;
	l->max_value = 64 * 1024;
}

void sync_batch_free(struct sync_batch *b)
{
	if (!b)
		return;
	arena_free(b->arena);
	arena_free(b->scratch);
	buf_free(&b->body);
	buf_free(&b->response);
	free(b);
}

uint64_t sync_batch_device(const struct sync_batch *b)
{
	return b->hdr.device;
}

uint64_t sync_batch_seq(const struct sync_batch *b)
{
	return b->hdr.batch_seq;
}

size_t sync_batch_changes(const struct sync_batch *b)
{
	return b->n_changes;
}

struct store_change *sync_batch_change(struct sync_batch *b, size_t i)
{
	return i < b->n_changes && !b->changes[i].rejected ? &b->changes[i].sc : NULL;
}

/* ---- reading the wire ----
 *
 * The batch is read straight from the bytes received, as its changes are
 * (wire.h): no protobuf-c unpacking on this path. */

#define BAD(c, ...)                                                         \
	do {                                                                \
		snprintf(v->code, sizeof(v->code), "%s", c);                \
		snprintf(v->reason, sizeof(v->reason), __VA_ARGS__);        \
		return -EINVAL;                                             \
	} while (0)

/* Two instance ids (16 bytes each, checked before) alike: inline, not a
 * call to memcmp per pair of writes. */
static inline bool id_eq(const uint8_t *a, const uint8_t *b)
{
	uint64_t x[2], y[2];
	memcpy(x, a, 16);
	memcpy(y, b, 16);
	return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
}

/* qsort's comparator has no context argument: the change being checked
 * (prepare_change runs on one thread at a time per batch, but batches are
 * decoded on several threads). */
static _Thread_local const struct wire_change *sort_ctx;

/* (instance, field) order; writes without an instance first. */
static int write_cmp(const void *x, const void *y)
{
	const struct wire_write *a = &sort_ctx->fields[*(const uint32_t *)x];
	const struct wire_write *b = &sort_ctx->fields[*(const uint32_t *)y];
	if (a->instance_len != b->instance_len)
		return a->instance_len < b->instance_len ? -1 : 1;
	int c = a->instance ? memcmp(a->instance, b->instance, a->instance_len) : 0;
	if (c)
		return c;
	return a->field < b->field ? -1 : a->field > b->field;
}

/* Whether writes order[0..n) hold each instance's writes in one run, by
 * increasing field, of one group, with few instances: as apps write them.
 * Then sorting them would find nothing the check below does not find on
 * them as they are, and they pass; false sends them to the sort, which
 * also finds what is wrong (and says so the same way for any order). */
static bool in_runs(const struct wire_change *wc, const struct form *form,
		    const uint32_t *order, size_t n)
{
	const struct wire_write *runs[16]; /* each run's first write */
	size_t n_runs = 0;
	const struct form_group *group = NULL;
	for (size_t k = 0; k < n; k++) {
		const struct wire_write *fw = &wc->fields[order[k]];
		const struct wire_write *o = k ? &wc->fields[order[k - 1]] : NULL;
		bool same = o && o->instance_len == fw->instance_len &&
			    (!fw->instance || id_eq(o->instance, fw->instance));
		if (same && fw->field <= o->field)
			return false;
		if (!same) {
			if (n_runs == 16)
				return false;
			for (size_t i = 0; i < n_runs; i++)
				if (runs[i]->instance_len == fw->instance_len &&
				    (!fw->instance || id_eq(runs[i]->instance, fw->instance)))
					return false; /* met before, apart */
			runs[n_runs++] = fw;
			group = NULL;
		}
		const struct form_field *fd = form_field(form, fw->field);
		if (fw->instance && fd && fd->group) {
			if (group && group != fd->group)
				return false;
			group = fd->group;
		}
	}
	return true;
}

static int prepare_change(struct sync_batch *b, struct arena *tmp,
			  const struct form_registry *forms, const struct sync_limits *lim,
			  const uint8_t *raw, size_t raw_len, uint64_t now_ms, struct prepared *p)
{
	struct form_verdict *v = &p->verdict;
	struct store_change *sc = &p->sc;
	uint64_t pusher = b->hdr.device;
	struct wire_change wc;

	sc->pusher = pusher;
	sc->batch_seq = b->hdr.batch_seq;
	sc->raw = raw;
	sc->raw_len = raw_len;
	crypto_generichash(sc->digest, 32, raw, raw_len, NULL, 0);

	int r = wire_read_change(b->arena, tmp, lim->max_fields, lim->max_base, raw, raw_len, &wc);
	if (r == -ENOMEM)
		return r;
	if (r == -EMSGSIZE)
		BAD("too_many_fields", "more than %zu fields, or %zu base stamps in a field",
		    lim->max_fields, lim->max_base);
	if (r < 0)
		BAD("malformed_change", "the change is not a well-formed Change message");
	sc->change_id = wc.change_id;
	if (wc.change_id == 0)
		BAD("bad_change_id", "change_id must be 1 or more");
	if (wc.record_id_len != UUID_LEN || uuid_is_nil(wc.record_id))
		BAD("bad_record_id", "record_id must be a 16-byte UUID, not the nil UUID");
	sc->record_id = wc.record_id;
	sc->origin = wc.origin ? wc.origin : pusher;
	if (sc->origin != pusher)
		BAD("origin_not_allowed", "a device may only push its own changes");
	/* Relayed as sent, an erased mark would make every other phone that
	 * holds the record remove its copy: only an admin's erasure sets it. */
	if (wc.erased)
		BAD("erased_not_allowed", "only the server marks a change erased (an admin's "
		    "erasure, shahidi erase)");
	char form_id[72];
	const struct form *form = NULL;
	/* (no form id at all: form_id is NULL, and memchr must not see it) */
	if (wc.form_id && wc.form_id_len < sizeof(form_id) &&
	    !memchr(wc.form_id, 0, wc.form_id_len)) {
		memcpy(form_id, wc.form_id, wc.form_id_len);
		form_id[wc.form_id_len] = 0;
		form = form_registry_find(forms, form_id, wc.form_version);
		if (!form) {
			for (size_t i = 0; i < form_registry_count(forms); i++)
				if (!strcmp(form_registry_at(forms, i)->form_id, form_id))
					BAD("unknown_form_version",
					    "this server does not know that version of the form");
		}
	}
	if (!form)
		BAD("unknown_form", "this server does not know that form");
	sc->form_id = form->form_id;
	sc->form_version = wc.form_version;
	if (wc.hlc == 0)
		BAD("bad_stamp", "the change has no HLC stamp");
	if (wc.n_fields == 0 && !wc.has_deletion)
		BAD("empty_change", "the change sets no field and deletes nothing");
	/* Work per change is bounded by the form, before anything is built:
	 * each field it knows once, and a newer app's fields up to a margin. */
	size_t unknown = 0;
	for (size_t i = 0; i < wc.n_fields; i++)
		unknown += !form_field(form, wc.fields[i].field);
	if (unknown > SYNC_MAX_UNKNOWN_FIELDS)
		BAD("too_many_fields", "%zu fields the form does not know; at most %u allowed",
		    unknown, SYNC_MAX_UNKNOWN_FIELDS);

	uint64_t seen[FORM_MAX_FIELDS / 64] = {0}; /* record fields, by index in the form */
	/* writes to instances and to fields the form does not know, checked
	 * below in (instance, field) order: each once, an instance's of one
	 * group, in n log n whatever a phone sends */
	uint32_t *order = arena_alloc(tmp, (wc.n_fields + 1) * sizeof(*order));
	size_t n_order = 0;
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < wc.n_fields; i++) {
		const struct wire_write *fw = &wc.fields[i];
		const struct form_field *fd = form_field(form, fw->field);
		struct form_value fv;
		bool inst = fw->instance != NULL;
		if (inst && (fw->instance_len != UUID_LEN || uuid_is_nil(fw->instance)))
			BAD("bad_instance", "field %u: an instance id is 16 bytes, not the nil UUID",
			    fw->field);
		if (fw->field == 0 && !inst)
			BAD("bad_field", "field numbers start at 1");
		if (fw->n_seen && fw->field != 0)
			BAD("bad_field", "field %u: only an instance's removal (field 0) lists what it "
			    "saw", fw->field);
		/* Relayed to other phones as sent: it must parse anywhere. Read
		 * once: its framing checked and its member taken in one walk
		 * (two members: vr -EBADMSG, refused below as before). */
		int vr = wire_value_read(fw->value, fw->value_len,
					 fd && fw->field ? (uint32_t)fd->type : 0, &fv);
		if (vr == -EPROTO)
			BAD("malformed_value", "field %u: the value is not a well-formed Value "
			    "(wire types, UTF-8 text, nested messages)", fw->field);
		if (fw->field == 0) {
			/* an instance's removal register: a boolean, like Deletion */
			if (vr < 0 || fv.kind != FT_BOOLEAN)
				BAD("bad_removal", "an instance's field 0 (its removal) holds a boolean");
		} else if (fd) {
			if (inst != (fd->group != NULL))
				BAD(inst ? "not_in_group" : "instance_required",
				    inst ? "field %u (%s) belongs to the record, not to a repeat group"
					 : "field %u (%s) belongs to a repeat group: name its instance",
				    fd->number, fd->name);
			if (form_check_parsed(fd, vr < 0 ? NULL : &fv, now_ms, v) < 0)
				return -EINVAL;
			if (fd->required && fv.kind == FT_NONE)
				BAD("required_cleared", "field %u (%s) is required and cannot be cleared",
				    fd->number, fd->name);
			if (!inst) {
				size_t k = (size_t)(fd - form->fields);
				if (seen[k / 64] & (1ull << (k % 64)))
					BAD("duplicate_field", "field %u is set twice", fw->field);
				seen[k / 64] |= 1ull << (k % 64);
			}
		} else {
			/* A newer app's field: kept and passed on, never dropped. */
			if (fw->value_len > lim->max_value)
				BAD("value_too_long", "field %u: %zu bytes, at most %zu allowed",
				    fw->field, fw->value_len, lim->max_value);
			if (vr < 0)
				BAD("malformed_value", "field %u: the value is not well-formed", fw->field);
		}
		if (!fd || inst)
			order[n_order++] = (uint32_t)i;
		for (size_t k = 0; k < fw->n_base; k++)
			if (!fw->base[k].hlc || !fw->base[k].device)
				BAD("bad_stamp", "field %u: a base stamp lacks its HLC or device", fw->field);
		for (size_t k = 0; k < fw->n_seen; k++)
			if (!fw->seen[k].hlc || !fw->seen[k].device)
				BAD("bad_stamp", "field %u: a seen stamp lacks its HLC or device", fw->field);
	}
	const struct form_group *group = NULL; /* of the instance being read */
	if (!in_runs(&wc, form, order, n_order)) {
		sort_ctx = &wc;
		qsort(order, n_order, sizeof(*order), write_cmp);
	} else {
		n_order = 0; /* nothing wrong in them: no need to look again */
	}
	for (size_t k = 0; k < n_order; k++) {
		const struct wire_write *fw = &wc.fields[order[k]];
		const struct wire_write *o = k ? &wc.fields[order[k - 1]] : NULL;
		bool same = o && o->instance_len == fw->instance_len &&
			    (!fw->instance || id_eq(o->instance, fw->instance));
		if (same && o->field == fw->field)
			BAD("duplicate_field", "field %u is set twice", fw->field);
		if (!same)
			group = NULL;
		const struct form_field *fd = form_field(form, fw->field);
		if (fw->instance && fd && fd->group) {
			if (group && group != fd->group)
				BAD("instance_group_mismatch",
				    "one instance holds fields of groups %s and %s", group->name,
				    fd->group->name);
			group = fd->group;
		}
	}
	if (wc.create) {
		/* the first required field (in the form's order) not set */
		for (size_t w = 0; w < (form->n_fields + 63) / 64; w++) {
			uint64_t missing = form->required[w] & ~seen[w];
			if (missing) {
				const struct form_field *fd =
					&form->fields[w * 64 + (size_t)__builtin_ctzll(missing)];
				BAD("required_missing", "field %u (%s) is required in a new record",
				    fd->number, fd->name);
			}
		}
	}
	if (wc.has_deletion) {
		for (size_t k = 0; k < wc.n_del_base; k++)
			if (!wc.del_base[k].hlc || !wc.del_base[k].device)
				BAD("bad_stamp", "deletion: a base stamp lacks its HLC or device");
		for (size_t k = 0; k < wc.n_del_seen; k++)
			if (!wc.del_seen[k].hlc || !wc.del_seen[k].device)
				BAD("bad_stamp", "deletion: a seen stamp lacks its HLC or device");
	}
	/* Valid: the merge's view of it, in the batch's arena. */
	struct merge_change mc;
	if (wire_change_merge(b->arena, &wc, pusher, &mc) < 0)
		return -ENOMEM;
	uint64_t max_hlc = 0;
	for (size_t i = 0; i < mc.n_writes; i++)
		max_hlc = SH_MAX(max_hlc, mc.writes[i].hlc);
	sc->writes = (struct merge_write *)mc.writes;
	sc->n_writes = mc.n_writes;
	sc->seen = mc.seen;
	sc->n_seen = mc.n_seen;
	sc->form = form;
	sc->hlc = max_hlc;
	sc->stable = true; /* its bytes are the batch's, freed after its commit */
	/* the writer's share, done here on the thread pool */
	return apply_prepare(b->arena, sc, wc.create) < 0 ? -ENOMEM : 0;
}

#undef BAD
#define BAD(err, c, ...)                                                   \
	do {                                                               \
		snprintf(verdict->code, sizeof(verdict->code), "%s", c);   \
		snprintf(verdict->reason, sizeof(verdict->reason), __VA_ARGS__); \
		r = err;                                                   \
		goto fail;                                                 \
	} while (0)

int sync_decode(const struct form_registry *forms, const struct sync_limits *lim,
		const uint8_t *body, size_t len, enum codec_enc enc, uint64_t now_ms,
		struct sync_batch **ret, struct form_verdict *verdict)
{
	struct sync_batch *b = calloc(1, sizeof(*b));
	struct arena *tmp = NULL; /* one change's list of writes at a time */
	int r;
	if (!b)
		return -ENOMEM;
	if (!(b->arena = arena_new()) || !(b->scratch = arena_new())) {
		r = -ENOMEM;
		goto fail;
	}
	r = codec_inflate(body, len, enc, lim->max_inflated, &b->body);
	if (r == -EMSGSIZE)
		BAD(r, "body_too_large", "the batch inflates to more than %zu bytes", lim->max_inflated);
	if (r == -EPROTO)
		BAD(r, "bad_compression", "the body is not valid %s data",
		    enc == CODEC_GZIP ? "gzip" : "deflate");
	if (r < 0)
		goto fail;

	/* The batch's fields, and how many changes it holds. */
	struct pb_field f;
	size_t pos = 0, n = 0;
	const uint8_t *app = NULL;
	size_t app_len = 0;
	while ((r = codec_pb_next(b->body.data, b->body.len, &pos, &f)) > 0) {
		int w = 0;
		switch (f.number) {
		case PUSH_BATCH_DEVICE: w = WIRE_TYPE(f, 1); b->hdr.device = f.varint; break;
		case PUSH_BATCH_BATCH_SEQ: w = WIRE_TYPE(f, 0); b->hdr.batch_seq = f.varint; break;
		case PUSH_BATCH_APP_VERSION: w = WIRE_TYPE(f, 2); app = f.data; app_len = f.len; break;
		case PUSH_BATCH_UNSENT:
			w = WIRE_TYPE(f, 0);
			b->hdr.unsent = f.varint > UINT32_MAX ? UINT32_MAX : (uint32_t)f.varint;
			break;
		case PUSH_BATCH_SENT_HLC: w = WIRE_TYPE(f, 1); b->hdr.sent_hlc = f.varint; break;
		case PUSH_BATCH_CHANGES:
			w = WIRE_TYPE(f, 2);
			if (++n > lim->max_changes)
				BAD(-EMSGSIZE, "too_many_changes", "more than %zu changes in one batch",
				    lim->max_changes);
			break;
		default: break;
		}
		if (w < 0)
			BAD(-EPROTO, "malformed_batch", "the body is not a well-formed PushBatch");
	}
	if (r < 0)
		BAD(-EPROTO, "malformed_batch", "the body is not a well-formed PushBatch");
	if (!b->hdr.device)
		BAD(-EINVAL, "bad_batch", "the batch names no device");
	if (!b->hdr.batch_seq)
		BAD(-EINVAL, "bad_batch", "batch_seq must be 1 or more");
	if (app_len > 64 || (app && !form_utf8_ok(app, app_len)))
		BAD(-EINVAL, "bad_batch", "app_version is UTF-8 of at most 64 bytes");
	if (!(b->hdr.app_version = arena_alloc(b->arena, app_len + 1))) {
		r = -ENOMEM;
		goto fail;
	}
	if (app_len)
		memcpy(b->hdr.app_version, app, app_len);
	b->hdr.app_version[app_len] = 0;

	b->n_changes = n;
	b->changes = arena_zalloc(b->arena, (n + 1) * sizeof(*b->changes));
	if (!b->changes) {
		r = -ENOMEM;
		goto fail;
	}
	/* The batch's digest, to tell a retry from another batch under the
	 * same number: every byte of it, each change's through the digest
	 * already computed of it (hashing the bytes twice cost a microsecond
	 * a report). */
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	pos = 0;
	size_t i = 0, prev = 0;
	if (!(tmp = arena_new())) {
		r = -ENOMEM;
		goto fail;
	}
	while (codec_pb_next(b->body.data, b->body.len, &pos, &f) > 0) {
		if (f.number != PUSH_BATCH_CHANGES)
			continue;
		struct prepared *p = &b->changes[i++];
		r = prepare_change(b, tmp, forms, lim, f.data, f.len, now_ms, p);
		arena_reset(tmp);
		if (r == -EINVAL)
			p->rejected = true;
		else if (r < 0)
			goto fail;
		/* the bytes before the change (other fields, its tag), then it */
		crypto_generichash_update(&st, b->body.data + prev, (size_t)(f.data - b->body.data) - prev);
		crypto_generichash_update(&st, p->sc.digest, 32);
		prev = (size_t)(f.data - b->body.data) + f.len;
	}
	crypto_generichash_update(&st, b->body.data + prev, b->body.len - prev);
	crypto_generichash_final(&st, b->digest, 32);
	arena_free(tmp);
	*ret = b;
	return 0;
fail:
	arena_free(tmp);
	sync_batch_free(b);
	return r;
}
#undef BAD

static void note_reject(store_device_t *d, struct arena *a, const struct form_verdict *v)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "%s: %s", v->code, v->reason);
	d->last_reject = arena_memdup(a, msg, strlen(msg) + 1);
	if (!d->last_reject)
		d->last_reject = "";
}

static int pack_response(struct sync_batch *b, Shahidi__V1__PushResponse *resp)
{
	buf_reset(&b->response);
	size_t n = shahidi__v1__push_response__get_packed_size(resp);
	int r = buf_reserve(&b->response, n);
	if (r < 0)
		return r;
	b->response.len = shahidi__v1__push_response__pack(resp, b->response.data);
	return 0;
}

int sync_apply(struct store_txn *t, struct sync_batch *b, uint64_t now_ms,
	       struct sync_result *ret)
{
	struct arena *a = b->scratch;
	struct arena *ca = NULL; /* one change's merge, released after it */
	const struct batch_hdr *pb = &b->hdr;
	struct sync_result res = {0};
	store_device_t *dev;
	store_memo_t *memo;
	int r;

	arena_reset(a);
	if ((r = store_device_get(t, a, pb->device, &dev)) < 0)
		return r;
	if (!(ca = arena_new()))
		return -ENOMEM;

	Shahidi__V1__PushResponse resp = SHAHIDI__V1__PUSH_RESPONSE__INIT, *old = NULL;
	r = store_memo_get(t, a, pb->device, pb->batch_seq, &memo);
	if (r == 0) {
		r = -EEXIST;
		if (memo->body_digest.len != 32 || memcmp(memo->body_digest.data, b->digest, 32))
			goto out;
		old = shahidi__v1__push_response__unpack(arena_pb_allocator(a), memo->results.len,
							 memo->results.data);
		r = -EIO;
		if (!old)
			goto out;
		resp = *old;
		for (size_t i = 0; i < resp.n_results; i++)
			res.applied += resp.results[i]->status == SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED;
		res.replay = true;
		dev->duplicates += b->n_changes;
	} else if (r != -ENOENT) {
		goto out;
	} else {
		resp.batch_seq = pb->batch_seq;
		resp.n_results = b->n_changes;
		resp.results = arena_alloc(a, (b->n_changes + 1) * sizeof(*resp.results));
		Shahidi__V1__ChangeResult *cr = arena_alloc(a, (b->n_changes + 1) * sizeof(*cr));
		r = -ENOMEM;
		if (!resp.results || !cr)
			goto out;
		for (size_t i = 0; i < b->n_changes; i++) {
			struct prepared *p = &b->changes[i];
			Shahidi__V1__ChangeResult *x = &cr[i];
			shahidi__v1__change_result__init(x);
			x->change_id = p->sc.change_id;
			enum store_outcome out = STORE_REJECTED;
			struct form_verdict v = p->verdict;
			if (!p->rejected) {
				r = apply_change(t, ca, &p->sc, now_ms, &out, &x->stored_hlc, &v);
				arena_reset(ca);
				if (r < 0)
					goto out;
			}
			if (out == STORE_APPLIED) {
				x->status = SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED;
				res.applied++;
			} else if (out == STORE_DUPLICATE) {
				x->status = SHAHIDI__V1__CHANGE_RESULT__STATUS__DUPLICATE;
				res.duplicate++;
			} else {
				x->status = SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED;
				x->code = arena_memdup(a, v.code, strlen(v.code) + 1);
				x->reason = arena_memdup(a, v.reason, strlen(v.reason) + 1);
				r = -ENOMEM;
				if (!x->code || !x->reason)
					goto out;
				note_reject(dev, a, &v);
				res.rejected++;
			}
			resp.results[i] = x;
		}
		/* Remember the answer, so that a retry gets the same one. */
		store_memo_t m = SHAHIDI__STORE__V1__BATCH_MEMO__INIT;
		if ((r = pack_response(b, &resp)) < 0)
			goto out;
		m.body_digest.data = b->digest;
		m.body_digest.len = 32;
		m.results.data = b->response.data;
		m.results.len = b->response.len;
		if ((r = store_memo_put(t, pb->device, pb->batch_seq, &m)) < 0)
			goto out;
		/* counted with the memo: a replay (above) is not counted again */
		if ((r = daily_note(t, dev->county, now_ms, res.applied, res.rejected)) < 0)
			goto out;
		dev->batches++;
		dev->changes_applied += res.applied;
		dev->duplicates += res.duplicate;
		dev->rejected += res.rejected;
		if (pb->batch_seq > dev->last_batch_seq)
			dev->last_batch_seq = pb->batch_seq;
	}

	dev->last_push_ms = now_ms;
	if (pb->batch_seq >= dev->last_batch_seq) {
		/* Only the newest batch speaks for the phone's current state. */
		dev->app_version = pb->app_version;
		dev->unsent = pb->unsent;
	}
	if ((r = store_device_put(t, dev)) < 0)
		goto out;

	struct hlc *clock = store_hlc(t);
	if (pb->sent_hlc && hlc_ms(pb->sent_hlc) > 0)
		resp.clock_offset_ms = (int64_t)hlc_ms(pb->sent_hlc) - (int64_t)now_ms;
	resp.server_hlc = hlc_tick(clock, now_ms);
	resp.pull_cursor = dev->pull_cursor;
	if (old) {
		if ((r = pack_response(b, &resp)) < 0)
			goto out;
	} else {
		/* The memo's bytes are the answer less its clock and cursor
		 * (zero there, so not sent): a protobuf message followed by
		 * more of its fields is one message, so only those are packed
		 * and appended, not every result a second time. */
		Shahidi__V1__PushResponse tail = SHAHIDI__V1__PUSH_RESPONSE__INIT;
		tail.clock_offset_ms = resp.clock_offset_ms;
		tail.server_hlc = resp.server_hlc;
		tail.pull_cursor = resp.pull_cursor;
		size_t n = shahidi__v1__push_response__get_packed_size(&tail);
		if ((r = buf_reserve(&b->response, n)) < 0)
			goto out;
		b->response.len += shahidi__v1__push_response__pack(
			&tail, b->response.data + b->response.len);
	}
	res.response = b->response.data;
	res.response_len = b->response.len;
	*ret = res;
	r = 0;
out:
	arena_free(ca);
	return r;
}

int sync_pull(struct store_txn *t, uint64_t device, uint64_t cursor, uint32_t limit,
	      size_t max_bytes, struct buf *out, struct sync_pull_info *ret)
{
	struct sync_pull_info info = {.next_cursor = cursor};
	struct buf item = {0};
	uint64_t log_seq, cur = cursor;
	struct arena *a = arena_new();
	int r;

	if (!a)
		return -ENOMEM;
	size_t start = out->len;
	while ((r = store_feed_next(t, device, &cur, &log_seq)) == 1 || r == 2) {
		if (r == 2) {
			/* past changes for other devices only: a page without
			 * them, and the phone asks again from here */
			info.next_cursor = cur;
			info.more = true;
			r = 0;
			break;
		}
		if (info.changes >= limit || out->len - start >= max_bytes) {
			info.more = true;
			break;
		}
		store_log_t *e;
		arena_reset(a);
		if ((r = store_log_get(t, a, log_seq, &e)) < 0) {
			r = r == -ENOENT ? -EIO : r;
			goto out;
		}
		if (e->erased) {
			/* its content is gone (erase.h): the erasure's own change,
			 * later in the feed, tells the phone */
			info.next_cursor = cur;
			continue;
		}
		/* As received: stamps are never rewritten (see merge.h), and
		 * what was accepted was checked to parse anywhere. */
		const uint8_t *chg = e->change.data;
		size_t chg_len = e->change.len;
		/* PulledChange, written straight to the wire: no message to build. */
		buf_reset(&item);
		if ((r = codec_pb_put_uint(&item, 1, cur)) < 0 ||
		    (r = codec_pb_put_uint(&item, 2, log_seq)) < 0 ||
		    (r = codec_pb_put_uint(&item, 3, e->received_ms)) < 0 ||
		    (r = codec_pb_put_fixed64(&item, 4, e->device)) < 0 ||
		    (r = codec_pb_put_bytes(&item, 5, chg, chg_len)) < 0 ||
		    (r = codec_pb_put_bytes(out, 1, item.data, item.len)) < 0)
			goto out;
		info.changes++;
		info.next_cursor = cur;
	}
	if (r < 0)
		goto out;
	if (r == 0 && !info.more && cur > info.next_cursor)
		info.next_cursor = cur; /* at the end: past what named others */
	if (info.next_cursor && (r = codec_pb_put_uint(out, 2, info.next_cursor)) < 0)
		goto out;
	if (info.more && (r = codec_pb_put_uint(out, 3, 1)) < 0)
		goto out;
	if ((r = codec_pb_put_fixed64(out, 4, store_hlc(t)->last)) < 0)
		goto out;
	*ret = info;
	r = 0;
out:
	buf_free(&item);
	arena_free(a);
	if (r < 0)
		out->len = start;
	return r;
}

int sync_note_pull(struct store_txn *t, uint64_t device, uint64_t cursor, uint64_t now_ms)
{
	struct arena *a = arena_new();
	store_device_t *d;
	if (!a)
		return -ENOMEM;
	int r = store_device_get(t, a, device, &d);
	if (r == 0) {
		d->last_pull_ms = now_ms;
		if (cursor > d->pull_cursor)
			d->pull_cursor = cursor;
		r = store_device_put(t, d);
	}
	arena_free(a);
	return r;
}
