#include "resolve.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "apply.h"
#include "arena.h"
#include "common.h"
#include "hlc.h"
#include "merge.h"
#include "shahidi.pb-c.h"
#include "store.h"

#define SERVER_CHANGE_BIT (1ull << 63)

#define BAD(c, ...)                                                  \
	do {                                                         \
		snprintf(v->code, sizeof(v->code), "%s", c);         \
		snprintf(v->reason, sizeof(v->reason), __VA_ARGS__); \
		r = -EINVAL;                                         \
		goto out;                                            \
	} while (0)

int resolve_apply(struct store_txn *t, const struct form_registry *forms, uint64_t actor,
		  const struct resolve_req *q, uint64_t now_ms, struct form_verdict *v,
		  uint64_t *ret_log_seq)
{
	struct arena *a = arena_new();
	merge_rec_t *rec;
	store_device_t *dev;
	int r;
	if (!a)
		return -ENOMEM;
	if ((r = store_record_get(t, a, q->record_id, &rec)) < 0)
		goto out;
	if ((r = store_device_get(t, a, actor, &dev)) < 0)
		goto out;
	uint32_t field = q->how == RESOLVE_DELETED ? MERGE_DELETION_FIELD : q->field;
	const uint8_t *inst = q->instance;
	const merge_reg_t *reg = merge_register_in(rec, inst, field);
	if (q->how == RESOLVE_DELETED && inst) {
		if (!merge_instance_flag(rec, inst) && !merge_in_conflict(reg))
			BAD("no_conflict", "the instance's removal is not in conflict");
	} else if (q->how == RESOLVE_DELETED) {
		if (!rec->delete_conflict && !merge_in_conflict(reg))
			BAD("no_conflict", "the record's deletion is not in conflict");
	} else {
		if (field == MERGE_DELETION_FIELD)
			BAD("bad_field", "field numbers start at 1");
		if (!merge_in_conflict(reg))
			BAD("no_conflict", "field %u is not in conflict", field);
	}

	/* The value it will hold. */
	const uint8_t *val = NULL;
	size_t val_len = 0;
	if (q->how == RESOLVE_TAKE) {
		bool found = false;
		for (size_t i = 0; reg && i < reg->n_entries; i++) {
			const merge_entry_t *e = reg->entries[i];
			if (e->device == q->take_device && !e->dead && !e->pending) {
				val = e->value.data; /* may be empty: the field was cleared */
				val_len = e->value.len;
				found = true;
			}
		}
		if (!found)
			BAD("no_such_value", "no live value of field %u comes from that device", field);
	} else if (q->how == RESOLVE_VALUE) {
		const struct form *f = form_registry_find(forms, rec->form_id, rec->form_version);
		const struct form_field *fd = f ? form_field(f, field) : NULL;
		if (!fd)
			BAD("unknown_field", "the record's form has no field %u", field);
		if (form_check_value(fd, q->value, q->value_len, now_ms, v) < 0) {
			r = -EINVAL;
			goto out;
		}
		val = q->value;
		val_len = q->value_len;
	} else {
		val = merge_deletion_value(q->deleted, &val_len);
	}

	/* The change, as a phone would have sent it: it saw every live value. */
	size_t n_live = merge_live_count(reg);
	Shahidi__V1__Stamp *stamps = arena_alloc(a, (n_live + 1) * sizeof(*stamps));
	Shahidi__V1__Stamp **sp = arena_alloc(a, (n_live + 1) * sizeof(*sp));
	struct merge_stamp *base = arena_alloc(a, (n_live + 1) * sizeof(*base));
	if (!stamps || !sp || !base) {
		r = -ENOMEM;
		goto out;
	}
	size_t k = 0;
	for (size_t i = 0; reg && i < reg->n_entries; i++) {
		const merge_entry_t *e = reg->entries[i];
		if (e->dead || e->pending)
			continue;
		shahidi__v1__stamp__init(&stamps[k]);
		stamps[k].hlc = e->hlc;
		stamps[k].device = e->device;
		sp[k] = &stamps[k];
		base[k] = (struct merge_stamp){e->hlc, e->device};
		k++;
	}
	/* A deletion's view: every live value of the record, each stamp once,
	 * so that what the coordinator settled is no longer flagged; an
	 * instance's removal sees every live value of that instance. */
	size_t n_seen = 0, cap_seen = 0;
	for (size_t i = 0; q->how == RESOLVE_DELETED && i < rec->n_registers; i++)
		if (rec->registers[i]->field != MERGE_DELETION_FIELD)
			cap_seen += rec->registers[i]->n_entries;
#define OF_IT(g) (!inst || (merge_reg_in_instance(g) && !memcmp((g)->instance.data, inst, 16)))
	Shahidi__V1__Stamp *seen_pb = arena_alloc(a, (cap_seen + 1) * sizeof(*seen_pb));
	Shahidi__V1__Stamp **seen_pp = arena_alloc(a, (cap_seen + 1) * sizeof(*seen_pp));
	struct merge_stamp *seen = arena_alloc(a, (cap_seen + 1) * sizeof(*seen));
	if (!seen_pb || !seen_pp || !seen) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; q->how == RESOLVE_DELETED && i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		for (size_t j = 0; g->field != MERGE_DELETION_FIELD && OF_IT(g) && j < g->n_entries;
		     j++) {
			const merge_entry_t *e = g->entries[j];
			bool dup = e->dead || e->pending;
			for (size_t m = 0; m < n_seen && !dup; m++)
				dup = seen[m].hlc == e->hlc && seen[m].device == e->device;
			if (dup)
				continue;
			seen[n_seen] = (struct merge_stamp){e->hlc, e->device};
			shahidi__v1__stamp__init(&seen_pb[n_seen]);
			seen_pb[n_seen].hlc = e->hlc;
			seen_pb[n_seen].device = e->device;
			seen_pp[n_seen] = &seen_pb[n_seen];
			n_seen++;
		}
	}
#undef OF_IT
	uint64_t hlc = hlc_tick(store_hlc(t), now_ms);
	dev->server_changes++;
	Shahidi__V1__Change ch = SHAHIDI__V1__CHANGE__INIT;
	ch.change_id = SERVER_CHANGE_BIT | dev->server_changes;
	ch.record_id = rec->record_id;
	ch.form_id = rec->form_id;
	ch.form_version = rec->form_version;
	ch.hlc = hlc;
	Shahidi__V1__FieldWrite fw = SHAHIDI__V1__FIELD_WRITE__INIT, *fwp = &fw;
	Shahidi__V1__Deletion del = SHAHIDI__V1__DELETION__INIT;
	struct merge_inst mi = {.seen = seen, .n_seen = n_seen};
	if (inst) {
		memcpy(mi.id, inst, 16);
		fw.instance.data = (uint8_t *)inst;
		fw.instance.len = 16;
	}
	if (q->how == RESOLVE_DELETED && inst) {
		/* an instance's removal: field 0 of the instance, its own view */
		fw.value = shahidi__v1__value__unpack(arena_pb_allocator(a), val_len, val);
		if (!fw.value)
			BAD("malformed_value", "the removal's value is not a well-formed Value");
		fw.supersedes = sp;
		fw.n_supersedes = k;
		fw.seen = seen_pp;
		fw.n_seen = n_seen;
		ch.fields = &fwp;
		ch.n_fields = 1;
	} else if (q->how == RESOLVE_DELETED) {
		del.deleted = q->deleted;
		del.supersedes = sp;
		del.n_supersedes = k;
		del.seen = seen_pp;
		del.n_seen = n_seen;
		ch.deletion = &del;
	} else {
		fw.field = field;
		if (val_len) {
			fw.value = shahidi__v1__value__unpack(arena_pb_allocator(a), val_len, val);
			if (!fw.value)
				BAD("malformed_value", "the value is not a well-formed Value");
		}
		fw.supersedes = sp;
		fw.n_supersedes = k;
		ch.fields = &fwp;
		ch.n_fields = 1;
	}
	size_t raw_len = shahidi__v1__change__get_packed_size(&ch);
	uint8_t *raw = arena_alloc(a, raw_len + 1);
	if (!raw) {
		r = -ENOMEM;
		goto out;
	}
	shahidi__v1__change__pack(&ch, raw);

	struct merge_write w = {.field = field, .hlc = hlc, .value = val, .value_len = val_len,
				.base = base, .n_base = k, .inst = inst ? &mi : NULL};
	struct store_change sc = {
		.pusher = actor, .origin = actor, .change_id = ch.change_id,
		.record_id = q->record_id, .form_id = rec->form_id,
		.form_version = rec->form_version, .raw = raw, .raw_len = raw_len,
		.hlc = hlc, .writes = &w, .n_writes = 1, .seen = inst ? NULL : seen,
		.n_seen = inst ? 0 : n_seen,
		.office = true,
	};
	crypto_generichash(sc.digest, 32, raw, raw_len, NULL, 0);
	if ((r = apply_office_change(t, a, &sc, dev, now_ms, v, ret_log_seq)) < 0)
		goto out;
	r = 0;
out:
	arena_free(a);
	return r;
}
