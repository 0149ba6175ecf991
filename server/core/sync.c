#include "sync.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "hlc.h"
#include "merge.h"
#include "shahidi.pb-c.h"
#include "store.h"
#include "uuid.h"

struct prepared {
	struct store_change sc;
	bool rejected;
	struct form_verdict verdict;
};

struct sync_batch {
	struct arena *arena;       /* the unpacked batch and everything below */
	struct buf body;           /* inflated body; raw change bytes point here */
	uint8_t digest[32];        /* of the inflated body */
	Shahidi__V1__PushBatch *pb;
	struct prepared *changes;  /* pb->n_changes */
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
	return b->pb->device;
}

uint64_t sync_batch_seq(const struct sync_batch *b)
{
	return b->pb->batch_seq;
}

size_t sync_batch_changes(const struct sync_batch *b)
{
	return b->n_changes;
}

#define BAD(c, ...)                                                         \
	do {                                                                \
		snprintf(v->code, sizeof(v->code), "%s", c);                \
		snprintf(v->reason, sizeof(v->reason), __VA_ARGS__);        \
		return -EINVAL;                                             \
	} while (0)

/* The bytes of each FieldWrite's value in a change, exactly as received,
 * so that what we store and relay is what the phone sent. */
static int value_spans(const uint8_t *raw, size_t len, size_t n_fields, const uint8_t **vals,
		       size_t *lens)
{
	struct pb_field f, g;
	size_t pos = 0, i = 0;
	int r;
	while ((r = codec_pb_next(raw, len, &pos, &f)) > 0) {
		if (f.number != 8)
			continue;
		if (f.wire_type != 2 || i >= n_fields)
			return -EPROTO;
		size_t p2 = 0, seen = 0;
		vals[i] = NULL;
		lens[i] = 0;
		while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
			if (g.number != 2)
				continue;
			if (g.wire_type != 2 || ++seen > 1)
				return -EPROTO; /* a value given twice would be merged: refuse */
			vals[i] = g.data;
			lens[i] = g.len;
		}
		if (r < 0)
			return r;
		i++;
	}
	return r < 0 ? r : (i == n_fields ? 0 : -EPROTO);
}

static int prepare_change(struct sync_batch *b, const struct form_registry *forms,
			  const struct sync_limits *lim, const Shahidi__V1__Change *ch,
			  const uint8_t *raw, size_t raw_len, uint64_t now_ms, struct prepared *p)
{
	struct form_verdict *v = &p->verdict;
	struct store_change *sc = &p->sc;
	uint64_t pusher = b->pb->device;

	sc->pusher = pusher;
	sc->change_id = ch->change_id;
	sc->batch_seq = b->pb->batch_seq;
	sc->raw = raw;
	sc->raw_len = raw_len;
	crypto_generichash(sc->digest, 32, raw, raw_len, NULL, 0);

	if (ch->change_id == 0)
		BAD("bad_change_id", "change_id must be 1 or more");
	if (ch->record_id.len != UUID_LEN || uuid_is_nil(ch->record_id.data))
		BAD("bad_record_id", "record_id must be a 16-byte UUID, not the nil UUID");
	sc->record_id = ch->record_id.data;
	sc->origin = ch->origin ? ch->origin : pusher;
	if (sc->origin != pusher)
		BAD("origin_not_allowed", "a device may only push its own changes");
	const struct form *form = form_registry_find(forms, ch->form_id, ch->form_version);
	if (!form) {
		bool known = false;
		for (size_t i = 0; i < form_registry_count(forms) && !known; i++)
			known = !strcmp(form_registry_at(forms, i)->form_id, ch->form_id);
		if (known)
			BAD("unknown_form_version", "this server does not know that version of the form");
		BAD("unknown_form", "this server does not know that form");
	}
	sc->form_id = form->form_id;
	sc->form_version = ch->form_version;
	if (ch->hlc == 0)
		BAD("bad_stamp", "the change has no HLC stamp");
	if (ch->n_fields > lim->max_fields)
		BAD("too_many_fields", "%zu fields, at most %zu allowed", ch->n_fields, lim->max_fields);
	if (ch->n_fields == 0 && !ch->deletion)
		BAD("empty_change", "the change sets no field and deletes nothing");

	size_t nw = ch->n_fields + (ch->deletion ? 1 : 0);
	const uint8_t **vals = arena_alloc(b->arena, (ch->n_fields + 1) * sizeof(*vals));
	size_t *lens = arena_alloc(b->arena, (ch->n_fields + 1) * sizeof(*lens));
	struct merge_write *w = arena_zalloc(b->arena, nw * sizeof(*w));
	if (!vals || !lens || !w)
		return -ENOMEM;
	if (value_spans(raw, raw_len, ch->n_fields, vals, lens) < 0)
		BAD("malformed_change", "a field write is not well-formed");

	uint64_t max_hlc = 0;
	uint64_t seen[FORM_MAX_FIELDS / 64] = {0}; /* by index in the form */
	for (size_t i = 0; i < ch->n_fields; i++) {
		const Shahidi__V1__FieldWrite *fw = ch->fields[i];
		if (fw->field == 0)
			BAD("bad_field", "field numbers start at 1");
		const struct form_field *fd = form_field(form, fw->field);
		if (fd) {
			size_t k = (size_t)(fd - form->fields);
			if (seen[k / 64] & (1ull << (k % 64)))
				BAD("duplicate_field", "field %u is set twice", fw->field);
			seen[k / 64] |= 1ull << (k % 64);
		} else {
			for (size_t j = 0; j < i; j++) /* fields the form does not know: rare */
				if (ch->fields[j]->field == fw->field)
					BAD("duplicate_field", "field %u is set twice", fw->field);
		}
		struct form_value fv;
		if (fd) {
			if (form_check_value(fd, vals[i], lens[i], now_ms, v) < 0)
				return -EINVAL;
			if (fd->required && form_value_parse(vals[i], lens[i], &fv) == 0 &&
			    fv.kind == FT_NONE)
				BAD("required_cleared", "field %u (%s) is required and cannot be cleared",
				    fd->number, fd->name);
		} else {
			/* A newer app's field: kept and passed on, never dropped. */
			if (lens[i] > lim->max_value)
				BAD("value_too_long", "field %u: %zu bytes, at most %zu allowed",
				    fw->field, lens[i], lim->max_value);
			if (form_value_parse(vals[i], lens[i], &fv) < 0)
				BAD("malformed_value", "field %u: the value is not well-formed", fw->field);
		}
		if (fw->n_supersedes > lim->max_base)
			BAD("too_many_base_stamps", "field %u: %zu base stamps, at most %zu", fw->field,
			    fw->n_supersedes, lim->max_base);
		struct merge_stamp *base = arena_alloc(b->arena, (fw->n_supersedes + 1) * sizeof(*base));
		if (!base)
			return -ENOMEM;
		for (size_t k = 0; k < fw->n_supersedes; k++) {
			if (!fw->supersedes[k]->hlc || !fw->supersedes[k]->device)
				BAD("bad_stamp", "field %u: a base stamp lacks its HLC or device", fw->field);
			base[k] = (struct merge_stamp){fw->supersedes[k]->hlc, fw->supersedes[k]->device};
		}
		w[i] = (struct merge_write){
			.field = fw->field,
			.hlc = fw->hlc ? fw->hlc : ch->hlc,
			.value = vals[i],
			.value_len = lens[i],
			.base = base,
			.n_base = fw->n_supersedes,
		};
		max_hlc = SH_MAX(max_hlc, w[i].hlc);
	}
	if (ch->create) {
		for (size_t i = 0; i < form->n_fields; i++) {
			const struct form_field *fd = &form->fields[i];
			if (fd->required && !(seen[i / 64] & (1ull << (i % 64))))
				BAD("required_missing", "field %u (%s) is required in a new record",
				    fd->number, fd->name);
		}
	}
	if (ch->deletion) {
		const Shahidi__V1__Deletion *d = ch->deletion;
		if (d->n_supersedes > lim->max_base)
			BAD("too_many_base_stamps", "deletion: %zu base stamps", d->n_supersedes);
		struct merge_stamp *base = arena_alloc(b->arena, (d->n_supersedes + 1) * sizeof(*base));
		if (!base)
			return -ENOMEM;
		for (size_t k = 0; k < d->n_supersedes; k++) {
			if (!d->supersedes[k]->hlc || !d->supersedes[k]->device)
				BAD("bad_stamp", "deletion: a base stamp lacks its HLC or device");
			base[k] = (struct merge_stamp){d->supersedes[k]->hlc, d->supersedes[k]->device};
		}
		struct merge_write *dw = &w[ch->n_fields];
		dw->field = MERGE_DELETION_FIELD;
		dw->hlc = d->hlc ? d->hlc : ch->hlc;
		dw->value = merge_deletion_value(d->deleted, &dw->value_len);
		dw->base = base;
		dw->n_base = d->n_supersedes;
		max_hlc = SH_MAX(max_hlc, dw->hlc);
	}
	sc->writes = w;
	sc->n_writes = nw;
	sc->hlc = max_hlc;
	/* the writer's share, done here on the thread pool */
	return store_prepare_change(b->arena, sc, ch->create) < 0 ? -ENOMEM : 0;
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
	crypto_generichash(b->digest, 32, b->body.data, b->body.len, NULL, 0);

	/* Count the changes before protobuf-c allocates room for them, and
	 * note where each one's bytes are. */
	struct pb_field f;
	size_t pos = 0, n = 0;
	while ((r = codec_pb_next(b->body.data, b->body.len, &pos, &f)) > 0)
		if (f.number == 6 && ++n > lim->max_changes)
			BAD(-EMSGSIZE, "too_many_changes", "more than %zu changes in one batch",
			    lim->max_changes);
	if (r < 0)
		BAD(-EPROTO, "malformed_batch", "the body is not a well-formed PushBatch");
	b->pb = shahidi__v1__push_batch__unpack(arena_pb_allocator(b->arena), b->body.len,
						 b->body.data);
	if (!b->pb || b->pb->n_changes != n)
		BAD(-EPROTO, "malformed_batch", "the body is not a well-formed PushBatch");
	if (!b->pb->device)
		BAD(-EINVAL, "bad_batch", "the batch names no device");
	if (!b->pb->batch_seq)
		BAD(-EINVAL, "bad_batch", "batch_seq must be 1 or more");
	if (strlen(b->pb->app_version) > 64)
		BAD(-EINVAL, "bad_batch", "app_version is longer than 64 bytes");

	b->n_changes = n;
	b->changes = arena_zalloc(b->arena, (n + 1) * sizeof(*b->changes));
	if (!b->changes) {
		r = -ENOMEM;
		goto fail;
	}
	pos = 0;
	for (size_t i = 0; i < n;) {
		if (codec_pb_next(b->body.data, b->body.len, &pos, &f) <= 0)
			BAD(-EPROTO, "malformed_batch", "the body is not a well-formed PushBatch");
		if (f.number != 6)
			continue;
		struct prepared *p = &b->changes[i];
		r = prepare_change(b, forms, lim, b->pb->changes[i], f.data, f.len, now_ms, p);
		if (r == -EINVAL)
			p->rejected = true;
		else if (r < 0)
			goto fail;
		i++;
	}
	*ret = b;
	return 0;
fail:
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
	const Shahidi__V1__PushBatch *pb = b->pb;
	struct sync_result res = {0};
	store_device_t *dev;
	store_memo_t *memo;
	int r;

	arena_reset(a);
	if ((r = store_device_get(t, a, pb->device, &dev)) < 0)
		return r;

	Shahidi__V1__PushResponse resp = SHAHIDI__V1__PUSH_RESPONSE__INIT, *old = NULL;
	r = store_memo_get(t, a, pb->device, pb->batch_seq, &memo);
	if (r == 0) {
		if (memo->body_digest.len != 32 || memcmp(memo->body_digest.data, b->digest, 32))
			return -EEXIST;
		old = shahidi__v1__push_response__unpack(arena_pb_allocator(a), memo->results.len,
							 memo->results.data);
		if (!old)
			return -EIO;
		resp = *old;
		for (size_t i = 0; i < resp.n_results; i++)
			res.applied += resp.results[i]->status == SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED;
		res.replay = true;
		dev->duplicates += b->n_changes;
	} else if (r != -ENOENT) {
		return r;
	} else {
		resp.batch_seq = pb->batch_seq;
		resp.n_results = b->n_changes;
		resp.results = arena_alloc(a, (b->n_changes + 1) * sizeof(*resp.results));
		Shahidi__V1__ChangeResult *cr = arena_alloc(a, (b->n_changes + 1) * sizeof(*cr));
		if (!resp.results || !cr)
			return -ENOMEM;
		for (size_t i = 0; i < b->n_changes; i++) {
			struct prepared *p = &b->changes[i];
			Shahidi__V1__ChangeResult *x = &cr[i];
			shahidi__v1__change_result__init(x);
			x->change_id = pb->changes[i]->change_id;
			enum store_outcome out = STORE_REJECTED;
			struct form_verdict v = p->verdict;
			if (!p->rejected) {
				r = store_apply_change(t, a, &p->sc, now_ms, &out, &x->stored_hlc, &v);
				if (r < 0)
					return r;
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
				if (!x->code || !x->reason)
					return -ENOMEM;
				note_reject(dev, a, &v);
				res.rejected++;
			}
			resp.results[i] = x;
		}
		/* Remember the answer, so that a retry gets the same one. */
		store_memo_t m = SHAHIDI__STORE__V1__BATCH_MEMO__INIT;
		if ((r = pack_response(b, &resp)) < 0)
			return r;
		m.body_digest.data = b->digest;
		m.body_digest.len = 32;
		m.results.data = b->response.data;
		m.results.len = b->response.len;
		if ((r = store_memo_put(t, pb->device, pb->batch_seq, &m)) < 0)
			return r;
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
		return r;

	struct hlc *clock = store_hlc(t);
	if (pb->sent_hlc && hlc_ms(pb->sent_hlc) > 0)
		resp.clock_offset_ms = (int64_t)hlc_ms(pb->sent_hlc) - (int64_t)now_ms;
	resp.server_hlc = hlc_tick(clock, now_ms);
	resp.pull_cursor = dev->pull_cursor;
	if ((r = pack_response(b, &resp)) < 0)
		return r;
	res.response = b->response.data;
	res.response_len = b->response.len;
	*ret = res;
	return 0;
}

/* A change as it was stored: restamped when its stamps were clamped. */
static int stored_change(struct arena *a, const store_log_t *e, struct buf *tmp,
			 const uint8_t **ret, size_t *ret_len)
{
	if (!e->stored_hlc) {
		*ret = e->change.data;
		*ret_len = e->change.len;
		return 0;
	}
	Shahidi__V1__Change *ch = shahidi__v1__change__unpack(arena_pb_allocator(a), e->change.len,
							       e->change.data);
	if (!ch)
		return -EIO;
	ch->hlc = e->stored_hlc;
	for (size_t i = 0; i < ch->n_fields; i++)
		ch->fields[i]->hlc = 0;
	if (ch->deletion)
		ch->deletion->hlc = 0;
	buf_reset(tmp);
	int r = buf_reserve(tmp, shahidi__v1__change__get_packed_size(ch));
	if (r < 0)
		return r;
	tmp->len = shahidi__v1__change__pack(ch, tmp->data);
	*ret = tmp->data;
	*ret_len = tmp->len;
	return 0;
}

int sync_pull(struct store_txn *t, uint64_t device, uint64_t cursor, uint32_t limit,
	      size_t max_bytes, struct buf *out, struct sync_pull_info *ret)
{
	struct sync_pull_info info = {.next_cursor = cursor};
	struct buf item = {0}, tmp = {0};
	uint64_t log_seq, cur = cursor;
	struct arena *a = arena_new();
	int r;

	if (!a)
		return -ENOMEM;
	size_t start = out->len;
	while ((r = store_feed_next(t, device, &cur, &log_seq)) == 1) {
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
		const uint8_t *chg;
		size_t chg_len;
		if ((r = stored_change(a, e, &tmp, &chg, &chg_len)) < 0)
			goto out;
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
	buf_free(&tmp);
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
