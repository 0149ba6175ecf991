/* apply: the engine above the store (see apply.h). */
#include "apply.h"
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>


#include "arena.h"
#include "codec.h"
#include "common.h"
#include "fields.h"
#include "form.h"
#include "upload.h"
#include "zchange.h"

#define REJECT(c, ...)                                                        \
	do {                                                                  \
		snprintf(verdict->code, sizeof(verdict->code), "%s", c);      \
		snprintf(verdict->reason, sizeof(verdict->reason), __VA_ARGS__); \
		*ret_outcome = STORE_REJECTED;                                \
		return 0;                                                     \
	} while (0)

/* The record a change makes from nothing, when no write names a base:
 * one register per field, one entry each, written straight as
 * shahidi.store.v1.Record bytes -- what merging into an empty record and
 * packing it would give (merge_rec_compact's base: the creator and the
 * stamp of its lowest field), at a fraction of the cost. Without full,
 * only what a pointer record stores (no registers: see Record.log_seq). */
static int encode_new_record(struct arena *a, struct store_change *c, bool full)
{
	size_t n = c->n_writes, cap = 64 + strlen(c->form_id) + 16;
	uint16_t *order = arena_alloc(a, (n + 1) * sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t m = i; /* insertion sort by field: a few dozen fields */
		while (m > 0 && c->writes[order[m - 1]].field > c->writes[i].field) {
			order[m] = order[m - 1];
			m--;
		}
		order[m] = (uint16_t)i;
		cap += 48 + c->writes[i].value_len;
	}
	uint64_t base_hlc = 0;
	for (size_t i = 0; i < n && !base_hlc; i++)
		if (c->writes[order[i]].field != MERGE_DELETION_FIELD)
			base_hlc = c->writes[order[i]].hlc;
	if (!base_hlc)
		return 0; /* only a deletion: leave it to the general path */
	uint8_t *p = arena_alloc(a, cap), *q = p;
	if (!p)
		return -ENOMEM;
	q += codec_put_bytes(q, RECORD_RECORD_ID, c->record_id, 16);
	q += codec_put_bytes(q, RECORD_FORM_ID, (const uint8_t *)c->form_id, strlen(c->form_id));
	if (c->form_version)
		q += codec_put_uint(q, RECORD_FORM_VERSION, c->form_version);
	q += codec_put_fixed64(q, RECORD_BASE_DEVICE, c->origin);
	q += codec_put_fixed64(q, RECORD_BASE_HLC, base_hlc);
	if (full) {
		/* Record.base_seq: every entry's change id, left out of them */
		q += codec_put_varint(q, RECORD_BASE_SEQ << 3);
		q += codec_put_varint(q, c->change_id);
	}
	for (size_t i = 0; i < n && full; i++) {
		const struct merge_write *w = &c->writes[order[i]];
		uint8_t entry[32], *e = entry;
		if (w->hlc != base_hlc)
			e += codec_put_fixed64(e, ENTRY_HLC, w->hlc);
		size_t elen;
		uint8_t hdr[32], *h = hdr;
		if (w->field)
			h += codec_put_uint(h, REGISTER_FIELD, w->field);
		h += codec_put_varint(h, REGISTER_ENTRIES << 3 | 2);
		elen = (size_t)(e - entry) +
		       (w->value_len ? 1 + codec_varint_len(w->value_len) + w->value_len : 0);
		h += codec_put_varint(h, elen);
		q += codec_put_varint(q, RECORD_REGISTERS << 3 | 2);
		q += codec_put_varint(q, (size_t)(h - hdr) + elen);
		memcpy(q, hdr, (size_t)(h - hdr));
		q += h - hdr;
		memcpy(q, entry, (size_t)(e - entry));
		q += e - entry;
		if (w->value_len)
			q += codec_put_bytes(q, ENTRY_VALUE, w->value, w->value_len);
	}
	uint8_t dev[8];
	for (int i = 0; i < 8; i++)
		dev[i] = (uint8_t)(c->origin >> (8 * i));
	q += codec_put_bytes(q, RECORD_WRITERS, dev, 8); /* packed fixed64 */
	c->new_record = p;
	c->new_record_len = (size_t)(q - p);
	arena_shrink(a, p, c->new_record_len); /* cap is a bound, twice the need */
	return 0;
}

/* Whether a creation's instances stay within their groups' max (what
 * instances_within_max judges on the merged record: in a new record every
 * instance is the change's own and none is removed). False when unsure:
 * no form, or out of memory; then the merge's path decides. */
static bool within_bounds(struct arena *a, const struct store_change *c)
{
	if (!c->form)
		return false;
	/* distinct instances, with their group (a form has few groups) */
	const uint8_t **ids = arena_alloc(a, (c->n_writes + 1) * sizeof(*ids));
	const struct form_group **gs = arena_alloc(a, (c->n_writes + 1) * sizeof(*gs));
	size_t n = 0;
	if (!ids || !gs)
		return false;
	for (size_t i = 0; i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		const struct form_field *fd = w->inst ? form_field(c->form, w->field) : NULL;
		if (!fd || !fd->group || !fd->group->max)
			continue;
		bool have = false;
		/* an instance's writes are usually next to each other: look back */
		for (size_t k = n; k-- > 0 && !have;)
			have = !memcmp(ids[k], w->inst->id, 16);
		if (have)
			continue;
		ids[n] = w->inst->id;
		gs[n++] = fd->group;
		uint32_t live = 0;
		for (size_t k = 0; k < n; k++)
			live += gs[k] == fd->group;
		if (live > fd->group->max)
			return false;
	}
	return true;
}

int apply_prepare(struct arena *a, struct store_change *c, bool creates)
{
	/* The LogEntry's device, batch, change and digest; the writer
	 * appends the rest (log_append). The change is compressed here, on
	 * the pool, when that is smaller (zchange.h): the writer only copies
	 * the bytes. */
	const uint8_t *z;
	size_t z_len;
	int r = zchange_pack(a, c->raw, c->raw_len, &z, &z_len);
	if (r < 0)
		return r;
	size_t cap = 10 + 12 + 12 + (z ? z_len : c->raw_len) + 36;
	uint8_t *p = arena_alloc(a, cap);
	if (!p)
		return -ENOMEM;
	size_t n = codec_put_fixed64(p, LOG_ENTRY_DEVICE, c->pusher);
	n += codec_put_uint(p + n, LOG_ENTRY_BATCH_SEQ, c->batch_seq);
	if (z)
		n += codec_put_bytes(p + n, LOG_ENTRY_CHANGE_ZSTD, z, z_len);
	else
		n += codec_put_bytes(p + n, LOG_ENTRY_CHANGE, c->raw, c->raw_len);
	n += codec_put_bytes(p + n, LOG_ENTRY_CHANGE_DIGEST, c->digest, 32);
	arena_shrink(a, p, n);
	c->log_prefix = p;
	c->log_prefix_len = n;

	bool deletes = false, instances = false, attachments = false;
	c->has_base = false;
	for (size_t i = 0; i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		c->has_base |= w->n_base > 0;
		deletes |= w->field == MERGE_DELETION_FIELD;
		instances |= w->inst != NULL;
		attachments |= upload_value_is_attachment(w->value, w->value_len);
	}
	/* Looked at here, on the pool, where the values were just read: on
	 * the writer this walk over every value of every change was 3-4% of
	 * its time at half rate, for reports that reference no file. */
	c->no_attachments = !attachments;
	c->new_record = NULL;
	c->pointer = false;
	/* A deletion's view (of the record or of an instance) goes through
	 * the merge; so does a creation that would break a group's bound,
	 * which the merge's path refuses. Instances that are all new need no
	 * other rule: the merge would give one register per write, sorted by
	 * (instance, field), which is how a pointer record is read back
	 * (records.c). */
	if (!creates || deletes || (instances && !within_bounds(a, c)))
		return 0;
	if (!c->has_base) {
		/* The usual report: stored once, in the log; its record points
		 * there. */
		c->pointer = true;
		r = encode_new_record(a, c, false);
		if (!c->new_record)
			c->pointer = false;
		return r;
	}
	/* What merging it into an empty record gives; the writer uses it when
	 * the record is indeed new and no stamp needs bringing back. */
	merge_rec_t *rec = merge_rec_new(a, c->record_id, c->form_id);
	if (!rec)
		return -ENOMEM;
	struct merge_change mc = {.device = c->origin, .seq = c->change_id,
				  .form_version = c->form_version,
				  .writes = c->writes, .n_writes = c->n_writes,
				  .seen = c->seen, .n_seen = c->n_seen};
	if (merge_apply(a, rec, &mc) < 0)
		return -ENOMEM;
	if (rec->conflicts)
		return 0; /* cannot happen for one change; keep the general path */
	merge_rec_compact(rec);
	size_t len = shahidi__store__v1__record__get_packed_size(rec);
	uint8_t *b = arena_alloc(a, len + 1);
	if (!b)
		return -ENOMEM;
	c->new_record_len = shahidi__store__v1__record__pack(rec, b);
	c->new_record = b;
	return 0;
}

static int log_append(struct store_txn *t, const struct store_change *c, uint64_t log_seq,
		      uint64_t record_seq, uint64_t prev, uint64_t now_ms)
{
	struct st_log_append e = {
		.prefix = c->log_prefix, .prefix_len = c->log_prefix_len,
		.pusher = c->pusher, .batch_seq = c->batch_seq, .digest = c->digest,
		.log_seq = log_seq, .record_seq = record_seq, .prev = prev, .now_ms = now_ms,
	};
	return st_append_log(t, &e);
}

/* A change that makes a new record, from its prepared bytes: no merge, no
 * packing on the writer's thread. */
static int apply_new(struct store_txn *t, const struct store_change *c, uint64_t seq,
		     uint64_t now_ms)
{
	uint64_t log_seq = t->next_log_seq++;
	uint8_t tail[64], rk[8];
	int r;
	t->counters_dirty = true;
	if ((r = log_append(t, c, log_seq, seq, 0, now_ms)) < 0)
		return r;
	sh_put_be64(rk, seq);
	/* Receipt metadata; and for a pointer record, where its registers are. */
	size_t n = codec_put_uint(tail, RECORD_FIRST_RECEIVED_MS, now_ms);
	n += codec_put_uint(tail + n, RECORD_LAST_CHANGED_MS, now_ms);
	n += codec_put_uint(tail + n, RECORD_CHANGES, 1);
	n += codec_put_uint(tail + n, RECORD_SEQ, seq);
	if (c->pointer)
		n += codec_put_uint(tail + n, RECORD_LOG_SEQ, log_seq);
	if ((r = st_put_concat(t, DB_RECS, rk, 8, c->new_record, c->new_record_len, tail, n,
			    MDB_APPEND)) < 0)
		return r;
	return 0;
}

/* THE CLOCK RULE. A change's stamps are kept exactly as sent: the merge
 * (merge.h) orders a device's own writes by change id and supersedes only
 * what bases name, so only the display of concurrent values depends on a
 * stamp's size, and rewriting stamps on arrival (as formats 1-3 did) would
 * make the result depend on arrival time. The server's own clock takes a
 * stamp only within --max-skew of its time, so that one phone's wrong
 * clock reaches nobody through server_hlc. */
static void clock_rule(struct store_txn *t, const struct store_change *c, uint64_t now_ms)
{
	hlc_receive(&t->hlc, c->hlc, now_ms);
}

/* THE HOLDING RULE. Knowing a record's id is not holding it: a phone
 * changes what it created (or has written: it created it, or was assigned
 * it then) or was assigned, nothing else. An office change (a resolution)
 * was checked against its actor's counties by its caller. */
static bool holding_rule(const struct store_change *c, const merge_rec_t *rec)
{
	return c->office || st_has_u64(rec->writers, rec->n_writers, c->origin) ||
	       st_has_u64(rec->assigned, rec->n_assigned, c->origin);
}

/* THE GROUPS' RULES (repeat groups, form version 3 on). An instance holds
 * fields of one group: a change writing an instance with a field of
 * another group than the instance already has is refused
 * (instance_group_mismatch). The group of an instance is the group of its
 * registers' fields. */
/* Index of the first register of instance id (registers sort by
 * (instance, field), the record's own first: merge.c), or n_registers. */
static size_t instance_first(const merge_rec_t *rec, const uint8_t id[16])
{
	size_t lo = 0, hi = rec->n_registers;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const merge_reg_t *g = rec->registers[mid];
		if (!merge_reg_in_instance(g) || memcmp(g->instance.data, id, 16) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The group of the instance whose registers start at rec->registers[i]. */
static const struct form_group *run_group(const struct form *f, const merge_rec_t *rec,
					  size_t i, const uint8_t id[16])
{
	for (; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		if (!merge_reg_in_instance(g) || memcmp(g->instance.data, id, 16))
			break;
		const struct form_field *fd = form_field(f, g->field);
		if (fd && fd->group)
			return fd->group;
	}
	return NULL;
}

static const struct form_group *group_of(const struct form *f, const merge_rec_t *rec,
					 const uint8_t id[16])
{
	return run_group(f, rec, instance_first(rec, id), id);
}

static bool instance_groups_agree(const struct store_change *c, const merge_rec_t *rec,
				  struct form_verdict *verdict)
{
	for (size_t i = 0; c->form && i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		const struct form_field *fd = w->inst ? form_field(c->form, w->field) : NULL;
		const struct form_group *g = fd && fd->group ? group_of(c->form, rec, w->inst->id) : NULL;
		if (g && g != fd->group) {
			snprintf(verdict->code, sizeof(verdict->code), "instance_group_mismatch");
			snprintf(verdict->reason, sizeof(verdict->reason),
				 "the instance belongs to group %s; field %u is of group %s", g->name,
				 fd->number, fd->group->name);
			return false;
		}
	}
	return true;
}

/* The groups (with a bound) this change adds an instance to: at most max. */
static size_t new_instances(const struct store_change *c, const merge_rec_t *rec,
			    const struct form_group **ret, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; c->form && i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		const struct form_field *fd = w->inst ? form_field(c->form, w->field) : NULL;
		if (!fd || !fd->group || !fd->group->max || group_of(c->form, rec, w->inst->id))
			continue;
		bool have = false;
		for (size_t k = 0; k < n && !have; k++)
			have = ret[k] == fd->group;
		if (!have && n < max)
			ret[n++] = fd->group;
	}
	return n;
}

/* THE BOUND. A change that adds an instance to a group already at its max
 * (instances not removed) is refused (too_many_instances). Judged on the
 * merged record, per change: like every per-change refusal, which of two
 * concurrent adds that cross the bound is refused depends on which comes
 * last. */
static bool instances_within_max(const merge_rec_t *rec, const struct form *f,
				 const struct form_group *const *grown, size_t n_grown,
				 const uint32_t *extra, struct form_verdict *verdict)
{
	uint32_t live[8] = {0};
	if (!n_grown)
		return true;
	for (size_t k = 0; extra && k < n_grown; k++)
		live[k] = extra[k];
	/* one walk over the instances (each a run of registers) */
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		const uint8_t *id = g->instance.data;
		if (!merge_reg_in_instance(g) || (i && merge_reg_in_instance(rec->registers[i - 1]) &&
						  !memcmp(rec->registers[i - 1]->instance.data, id, 16)))
			continue;
		const struct form_group *gr = run_group(f, rec, i, id);
		for (size_t k = 0; k < n_grown; k++)
			if (gr == grown[k]) {
				/* its removal, field 0, is the run's first register */
				live[k] += !(g->field == MERGE_DELETION_FIELD &&
					     merge_instance_removed(rec, id));
				break;
			}
	}
	for (size_t k = 0; k < n_grown; k++) {
		if (live[k] > grown[k]->max) {
			snprintf(verdict->code, sizeof(verdict->code), "too_many_instances");
			snprintf(verdict->reason, sizeof(verdict->reason),
				 "group %s holds at most %u instances", grown[k]->name, grown[k]->max);
			return false;
		}
	}
	return true;
}

/* THE BOUND, judged before the merge when that is exact and cheap: a
 * change that removes or restores no instance (no field 0 of one) leaves
 * every instance as live as it was, so the merged record's live instances
 * of a group are the record's and the ones the change gives it (in no
 * group yet, not removed). False (verdict filled) only when the merge
 * would break the bound, so that a refused change never touches the
 * record; true when it holds or cannot be told here (the merge's check
 * then decides), *ret_judged saying which. */
static bool bound_before_merge(const struct store_change *c, const merge_rec_t *rec,
			       const struct form_group *const *grown, size_t n_grown,
			       struct form_verdict *verdict, bool *ret_judged)
{
	uint32_t extra[8] = {0};
	const uint8_t *ids[64];
	size_t n_ids = 0;
	*ret_judged = !n_grown || !c->form; /* nothing can go over, then */
	if (*ret_judged)
		return true;
	for (size_t i = 0; i < c->n_writes; i++)
		if (c->writes[i].inst && c->writes[i].field == MERGE_DELETION_FIELD)
			return true;
	for (size_t i = 0; i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		const struct form_field *fd = w->inst ? form_field(c->form, w->field) : NULL;
		size_t k = 0;
		if (!fd || !fd->group)
			continue;
		while (k < n_grown && grown[k] != fd->group)
			k++;
		if (k == n_grown)
			continue;
		bool have = false;
		for (size_t j = 0; j < n_ids && !have; j++)
			have = !memcmp(ids[j], w->inst->id, 16);
		if (have)
			continue;
		if (n_ids == 64)
			return true; /* many: the merge's check */
		ids[n_ids++] = w->inst->id;
		extra[k] += !group_of(c->form, rec, w->inst->id) &&
			    !merge_instance_removed(rec, w->inst->id);
	}
	*ret_judged = true;
	return instances_within_max(rec, c->form, grown, n_grown, extra, verdict);
}

/* A change refused after its dedupe entry, and for a new record its id,
 * went in: takes them back. */
static int take_back(struct store_txn *t, const struct store_change *c, const uint8_t ck[16],
		     bool is_new)
{
	int r = st_del_raw(t, DB_CHG, ck, 16);
	if (r < 0 || !is_new)
		return r;
	t->next_record_seq--;
	t->records--;
	return st_del_raw(t, DB_RID, c->record_id, 16);
}

int apply_change(struct store_txn *t, struct arena *a, struct store_change *c,
		       uint64_t now_ms, enum store_outcome *ret_outcome, uint64_t *ret_stored_hlc,
		       struct form_verdict *verdict)
{
	uint8_t ck[16], lk[8], rk[8];
	MDB_val v = {0};
	int r;

	*ret_stored_hlc = 0;
	if (!c->log_prefix && (r = apply_prepare(a, c, false)) < 0)
		return r;
	/* The dedupe entry goes in first, naming the log seq the change will
	 * have: one lookup answers "seen before?" and records it if not. */
	uint64_t log_seq = t->next_log_seq;
	sh_put_be64(ck, c->origin);
	sh_put_be64(ck + 8, c->change_id);
	sh_put_be64(lk, log_seq);
	r = st_put_new(t, DB_CHG, ck, 16, lk, 8, &v);
	if (r == 1) {
		uint64_t seen_at, stored_hlc;
		uint8_t digest[32];
		if ((r = st_val_u64(&v, &seen_at)) < 0)
			return r;
		if ((r = store_log_seen(t, seen_at, digest, &stored_hlc)) < 0)
			return r == -ENOENT ? -EIO : r;
		if (memcmp(digest, c->digest, 32))
			REJECT("change_id_reused",
			       "change %llu of this device was received before with other content",
			       (unsigned long long)c->change_id);
		*ret_outcome = STORE_DUPLICATE;
		*ret_stored_hlc = stored_hlc;
		return 0;
	}
	if (r < 0)
		return r;

	clock_rule(t, c, now_ms);
	/* Likewise the id index: the record is new if its id goes in. */
	uint64_t seq = t->next_record_seq;
	sh_put_be64(rk, seq);
	if ((r = st_put_new(t, DB_RID, c->record_id, 16, rk, 8, &v)) < 0)
		return r;
	bool is_new = r == 0, had_conflict = false;
	if (is_new) {
		t->next_record_seq++;
		t->records++;
	} else if ((r = st_val_u64(&v, &seq)) < 0) {
		return r;
	}
	if (is_new && c->new_record) {
		if ((r = apply_new(t, c, seq, now_ms)) < 0 ||
		    (r = upload_note_change(t, c, seq, now_ms)) < 0) /* attachments' index */
			return r;
		*ret_outcome = STORE_APPLIED;
		return 0;
	}

	/* A pushed change of a record changed before in this transaction is
	 * merged where the record can stay for the next change of it (st_rc_*:
	 * a record that many phones change at once is then read, packed and
	 * written once a commit, not once a change); anything else's, in a. */
	bool keep = c->stable && !is_new && st_rc_wanted(t, seq);
	struct arena *ra = NULL;
	if (keep && (r = st_rc_arena(t, &ra)) < 0)
		return r;
	merge_rec_t *rec = ra ? st_rc_get(t, seq) : NULL;
	bool cached = rec != NULL;
	if (!ra)
		ra = a;
	if (is_new) {
		if (!(rec = merge_rec_new(ra, c->record_id, c->form_id)))
			return -ENOMEM;
		rec->seq = seq;
		rec->first_received_ms = now_ms;
	} else if (!cached && (r = st_record_by_seq(t, ra, seq, &rec)) < 0) {
		return r == -ENOENT ? -EIO : r;
	} else if (!cached && ra != a && (r = st_rc_put(t, seq, rec, false)) < 0) {
		return r; /* kept as read, for the next change even if this one is refused */
	} else if (strcmp(rec->form_id, c->form_id)) {
		if ((r = st_del_raw(t, DB_CHG, ck, 16)) < 0) /* not applied after all */
			return r;
		REJECT("form_mismatch", "the record belongs to form %s, the change is for %s",
		       rec->form_id, c->form_id);
	} else if (!holding_rule(c, rec)) {
		if ((r = st_del_raw(t, DB_CHG, ck, 16)) < 0)
			return r;
		REJECT("not_assigned",
		       "this device did not create the record and was not assigned it");
	} else if (!instance_groups_agree(c, rec, verdict)) {
		if ((r = st_del_raw(t, DB_CHG, ck, 16)) < 0)
			return r;
		*ret_outcome = STORE_REJECTED;
		return 0;
	} else {
		had_conflict = rec->conflicts > 0;
	}
	const struct form_group *grown[8];
	size_t n_grown = new_instances(c, rec, grown, 8);
	bool judged;
	if (!bound_before_merge(c, rec, grown, n_grown, verdict, &judged)) {
		if ((r = take_back(t, c, ck, is_new)) < 0)
			return r;
		*ret_outcome = STORE_REJECTED;
		return 0;
	}
	/* The merge changes the record in place: a change the bound may still
	 * refuse once merged needs the record as it was in the store, to read
	 * it again from there. */
	bool dirty = cached && st_rc_dirty(t, seq);
	if (dirty && !judged) {
		if ((r = st_rc_write(t, seq)) < 0)
			return r;
		dirty = false;
	}

	t->next_log_seq++;
	t->counters_dirty = true;
	struct merge_change mc = {
		.device = c->origin,
		.seq = c->change_id,
		.form_version = c->form_version,
		.writes = c->writes,
		.n_writes = c->n_writes,
		.seen = c->seen,
		.n_seen = c->n_seen,
	};
	if ((r = merge_apply(ra, rec, &mc)) < 0) {
		st_rc_drop(t, seq); /* half merged (the transaction is spoilt) */
		return r;
	}
	if (!instances_within_max(rec, c->form, grown, n_grown, NULL, verdict)) {
		/* Judged exactly before the merge, it cannot differ now; were
		 * it to, the changes kept unwritten would go with the record:
		 * spoil the transaction rather than lose them. */
		if (dirty)
			return -EIO;
		/* refused after all: take back what accepting it put in (the
		 * record as merged is not the stored one any more) */
		st_rc_drop(t, seq);
		t->next_log_seq--;
		if ((r = take_back(t, c, ck, is_new)) < 0)
			return r;
		*ret_outcome = STORE_REJECTED;
		return 0;
	}
	rec->last_changed_ms = now_ms;
	rec->changes++;

	/* The record's history chain: this change follows its newest (none
	 * for a record last written before format 3: store_record_history
	 * finds the changes before this one in rlog). */
	if ((r = log_append(t, c, log_seq, rec->seq, rec->head_log_seq, now_ms)) < 0)
		return r;
	rec->head_log_seq = log_seq;
	if (ra != a) {
		/* kept, and written when the transaction ends (or before
		 * anything reads the stored records); its conflicts index now */
		uint8_t k[8];
		sh_put_be64(k, seq);
		if ((r = st_note_conflicts(t, k, had_conflict, rec->conflicts > 0)) < 0 ||
		    (r = st_rc_put(t, seq, rec, true)) < 0)
			return r;
	} else if ((r = st_put_record(t, rec, is_new, had_conflict)) < 0) {
		return r;
	}

	/* Every other device that holds the record pulls the change. */
	if ((r = st_feed_fanout(t, log_seq, c->origin, c->pusher, rec->writers, rec->n_writers,
				rec->assigned, rec->n_assigned)) < 0)
		return r;
	if ((r = upload_note_change(t, c, rec->seq, now_ms)) < 0) /* attachments' index */
		return r;
	*ret_outcome = STORE_APPLIED;
	return 0;
}

int apply_office_change(struct store_txn *t, struct arena *a, struct store_change *c,
			const store_device_t *dev, uint64_t now_ms, struct form_verdict *verdict,
			uint64_t *ret_log_seq)
{
	enum store_outcome out;
	uint64_t stored;
	struct store_info info;
	int r = apply_change(t, a, c, now_ms, &out, &stored, verdict);
	if (r < 0)
		return r;
	if (out != STORE_APPLIED)
		return -EINVAL;
	if ((r = store_device_put(t, dev)) < 0 || (r = store_info(t, &info)) < 0)
		return r;
	*ret_log_seq = info.log_entries; /* the entry just appended is the newest */
	return 0;
}
