#include "merge.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "form.h"

static const uint8_t deleted_true[] = {0x20, 0x01};  /* Value{boolean: true} */
static const uint8_t deleted_false[] = {0x20, 0x00}; /* Value{boolean: false} */

const uint8_t *merge_deletion_value(bool deleted, size_t *ret_len)
{
	*ret_len = 2;
	return deleted ? deleted_true : deleted_false;
}

merge_rec_t *merge_rec_new(struct arena *a, const uint8_t *record_id, const char *form_id)
{
	merge_rec_t *rec = arena_alloc(a, sizeof(*rec));
	if (!rec)
		return NULL;
	shahidi__store__v1__record__init(rec);
	rec->record_id.data = arena_memdup(a, record_id, 16);
	rec->record_id.len = 16;
	rec->form_id = arena_memdup(a, form_id, strlen(form_id) + 1);
	if (!rec->record_id.data || !rec->form_id)
		return NULL;
	return rec;
}

typedef Shahidi__Store__V1__Stamp merge_pb_stamp_t;

/* Registers sort by (instance, field): the record's own (no instance)
 * first, then instances by id. */
int merge_reg_cmp(const merge_reg_t *g, const uint8_t *instance, uint32_t field)
{
	if (g->instance.len != (instance ? 16u : 0u))
		return g->instance.len ? 1 : -1;
	int c = instance ? memcmp(g->instance.data, instance, 16) : 0;
	if (c)
		return c;
	return g->field < field ? -1 : g->field > field;
}

static merge_reg_t *find_reg(const merge_rec_t *rec, const uint8_t *instance, uint32_t field,
			     size_t *ret_at)
{
	size_t lo = 0, hi = rec->n_registers;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = merge_reg_cmp(rec->registers[mid], instance, field);
		if (c == 0) {
			*ret_at = mid;
			return rec->registers[mid];
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_at = lo;
	return NULL;
}

static const uint8_t *inst_id(const struct merge_write *w)
{
	return w->inst ? w->inst->id : NULL;
}

const merge_reg_t *merge_register(const merge_rec_t *rec, uint32_t field)
{
	size_t at;
	return find_reg(rec, NULL, field, &at);
}

const merge_reg_t *merge_register_in(const merge_rec_t *rec, const uint8_t *instance,
				     uint32_t field)
{
	size_t at;
	return find_reg(rec, instance, field, &at);
}

/* Makes sure every register the change writes exists, growing the
 * record's array once per change (not once per new field: a change that
 * adds hundreds of fields must not copy the array hundreds of times). */
static int add_registers(struct arena *a, merge_rec_t *rec, const struct merge_change *c)
{
	size_t missing = 0, at;
	for (size_t i = 0; i < c->n_writes; i++)
		missing += !find_reg(rec, inst_id(&c->writes[i]), c->writes[i].field, &at);
	if (!missing)
		return 0;
	merge_reg_t **na = arena_alloc(a, (rec->n_registers + missing) * sizeof(*na));
	merge_reg_t *regs = arena_alloc(a, missing * sizeof(*regs));
	if (!na || !regs)
		return -ENOMEM;
	if (rec->n_registers)
		memcpy(na, rec->registers, rec->n_registers * sizeof(*na));
	rec->registers = na;
	size_t k = 0;
	for (size_t i = 0; i < c->n_writes; i++) {
		uint32_t field = c->writes[i].field;
		const uint8_t *inst = inst_id(&c->writes[i]);
		if (find_reg(rec, inst, field, &at))
			continue; /* present, or added by an earlier write of this change */
		merge_reg_t *reg = &regs[k++];
		shahidi__store__v1__register__init(reg);
		reg->field = field;
		if (inst) {
			if (!(reg->instance.data = arena_memdup(a, inst, 16)))
				return -ENOMEM;
			reg->instance.len = 16;
		}
		memmove(na + at + 1, na + at, (rec->n_registers - at) * sizeof(*na));
		na[at] = reg;
		rec->n_registers++;
	}
	return 0;
}

static merge_entry_t *find_entry(const merge_reg_t *reg, uint64_t device, size_t *ret_at)
{
	size_t lo = 0, hi = reg->n_entries;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint64_t d = reg->entries[mid]->device;
		if (d == device) {
			*ret_at = mid;
			return reg->entries[mid];
		}
		if (d < device)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_at = lo;
	return NULL;
}

static merge_entry_t *new_entry(struct arena *a, merge_reg_t *reg, uint64_t device, size_t at)
{
	merge_entry_t *e = arena_alloc(a, sizeof(*e));
	merge_entry_t **na = arena_alloc(a, (reg->n_entries + 1) * sizeof(*na));
	if (!e || !na)
		return NULL;
	shahidi__store__v1__entry__init(e);
	e->device = device;
	if (at)
		memcpy(na, reg->entries, at * sizeof(*na));
	na[at] = e;
	if (reg->n_entries > at)
		memcpy(na + at + 1, reg->entries + at, (reg->n_entries - at) * sizeof(*na));
	reg->entries = na;
	reg->n_entries++;
	return e;
}

static int stamp_cmp(uint64_t dev_a, uint64_t hlc_a, uint64_t dev_b, uint64_t hlc_b)
{
	if (dev_a != dev_b)
		return dev_a < dev_b ? -1 : 1;
	return hlc_a < hlc_b ? -1 : hlc_a > hlc_b;
}

/* Index of tombstone (device, hlc) or where it would go; *found says. */
static size_t find_tomb(const merge_reg_t *reg, uint64_t device, uint64_t hlc, bool *found)
{
	size_t lo = 0, hi = reg->n_tombstones;
	*found = false;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const merge_pb_stamp_t *t = reg->tombstones[mid];
		int c = stamp_cmp(t->device, t->hlc, device, hlc);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Drops the tombstones of device at or below hlc: its latest write is
 * there now, so they name that write (handled by its dead flag) or
 * earlier ones, which are superseded anyway. */
static void drop_tombs_upto(merge_reg_t *reg, uint64_t device, uint64_t hlc)
{
	bool found;
	size_t from = find_tomb(reg, device, 0, &found);
	size_t to = from;
	while (to < reg->n_tombstones && reg->tombstones[to]->device == device &&
	       reg->tombstones[to]->hlc <= hlc)
		to++;
	if (to == from)
		return;
	memmove(reg->tombstones + from, reg->tombstones + to,
		(reg->n_tombstones - to) * sizeof(*reg->tombstones));
	reg->n_tombstones -= to - from;
}

/* A base stamp names one write its writer saw: that write is dead. */
static int apply_base(struct arena *a, merge_reg_t *reg, struct merge_stamp b, size_t room)
{
	size_t at;
	merge_entry_t *e = find_entry(reg, b.device, &at);
	if (e && b.hlc == e->hlc) {
		e->dead = true;
		e->value.data = NULL;
		e->value.len = 0;
		return 0;
	}
	if (e && b.hlc < e->hlc)
		return 0; /* an earlier write of that device: superseded already */
	bool found;
	size_t i = find_tomb(reg, b.device, b.hlc, &found);
	if (found)
		return 0;
	/* The array was grown for the whole write's bases (see merge_apply). */
	if (room == 0)
		return -ENOMEM;
	merge_pb_stamp_t *t = arena_alloc(a, sizeof(*t));
	if (!t)
		return -ENOMEM;
	shahidi__store__v1__stamp__init(t);
	t->device = b.device;
	t->hlc = b.hlc;
	memmove(reg->tombstones + i + 1, reg->tombstones + i,
		(reg->n_tombstones - i) * sizeof(*reg->tombstones));
	reg->tombstones[i] = t;
	reg->n_tombstones++;
	return 0;
}

static int value_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	size_t n = SH_MIN(alen, blen);
	int c = n ? memcmp(a, b, n) : 0;
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int set_seen(struct arena *a, merge_entry_t *e, const struct merge_stamp *seen,
		    size_t n_seen)
{
	e->seen = NULL;
	e->n_seen = 0;
	if (!n_seen)
		return 0;
	merge_pb_stamp_t *st = arena_alloc(a, n_seen * sizeof(*st));
	merge_pb_stamp_t **sp = arena_alloc(a, n_seen * sizeof(*sp));
	if (!st || !sp)
		return -ENOMEM;
	for (size_t i = 0; i < n_seen; i++) {
		shahidi__store__v1__stamp__init(&st[i]);
		st[i].hlc = seen[i].hlc;
		st[i].device = seen[i].device;
		sp[i] = &st[i];
	}
	e->seen = sp;
	e->n_seen = n_seen;
	return 0;
}

static int apply_write(struct arena *a, merge_reg_t *reg, const struct merge_change *c,
		       const struct merge_write *w)
{
	size_t at;
	bool named = false;
	merge_entry_t *e = find_entry(reg, c->device, &at);
	if (!e) {
		if (!(e = new_entry(a, reg, c->device, at)))
			return -ENOMEM;
	} else {
		/* The device's writes in the order it made them: change id, then
		 * (a change writing one field twice, which only a broken device
		 * does) stamp and value, so that the outcome is order-free. */
		int cmp = c->seq != e->seq ? (c->seq < e->seq ? -1 : 1)
					   : w->hlc != e->hlc ? (w->hlc < e->hlc ? -1 : 1)
					   : e->dead ? 0
					   : value_cmp(w->value, w->value_len, e->value.data, e->value.len);
		if (cmp <= 0)
			return 0; /* an earlier write, or this one again */
		named = w->hlc == e->hlc && e->dead; /* a base named this stamp */
	}
	bool found;
	size_t i = find_tomb(reg, c->device, w->hlc, &found);
	(void)i;
	named |= found;
	e->seq = c->seq;
	e->hlc = w->hlc;
	e->orig_hlc = 0;
	e->pending = false;
	e->dead = named;
	e->value.data = named ? NULL : (uint8_t *)w->value;
	e->value.len = named ? 0 : w->value_len;
	drop_tombs_upto(reg, c->device, w->hlc);
	if (w->field != MERGE_DELETION_FIELD)
		return 0;
	return w->inst ? set_seen(a, e, w->inst->seen, w->inst->n_seen)
		       : set_seen(a, e, c->seen, c->n_seen);
}

static bool live(const merge_entry_t *e)
{
	return !e->dead && !e->pending;
}

const merge_entry_t *merge_current(const merge_reg_t *reg)
{
	const merge_entry_t *best = NULL;
	if (!reg)
		return NULL;
	for (size_t i = 0; i < reg->n_entries; i++) {
		const merge_entry_t *e = reg->entries[i];
		if (!live(e))
			continue;
		if (!best || merge_shown_before(e->hlc, e->device, best->hlc, best->device))
			best = e;
	}
	return best;
}

size_t merge_live_count(const merge_reg_t *reg)
{
	size_t n = 0;
	for (size_t i = 0; reg && i < reg->n_entries; i++)
		n += live(reg->entries[i]);
	return n;
}

bool merge_in_conflict(const merge_reg_t *reg)
{
	const merge_entry_t *first = NULL;
	for (size_t i = 0; reg && i < reg->n_entries; i++) {
		const merge_entry_t *e = reg->entries[i];
		if (!live(e))
			continue;
		if (!first)
			first = e;
		else if (value_cmp(first->value.data, first->value.len, e->value.data, e->value.len))
			return true;
	}
	return false;
}

static bool entry_says_deleted(const merge_entry_t *e)
{
	return e && form_value_is_true(e->value.data, e->value.len);
}

bool merge_is_deleted(const merge_rec_t *rec)
{
	return entry_says_deleted(merge_current(merge_register(rec, MERGE_DELETION_FIELD)));
}

/* Whether deletion entry d had seen write e: a write of its own device
 * (earlier, or later: that device knows it deleted), or a stamp its
 * Deletion.seen listed. */
static bool deletion_saw(const merge_entry_t *d, const merge_entry_t *e)
{
	if (e->device == d->device)
		return true;
	for (size_t i = 0; i < d->n_seen; i++)
		if (d->seen[i]->hlc == e->hlc && d->seen[i]->device == e->device)
			return true;
	return false;
}

/* Whether some live deletion entry of dreg (saying "deleted") saw e. */
static bool some_deletion_saw(const merge_reg_t *dreg, const merge_entry_t *e)
{
	for (size_t k = 0; dreg && k < dreg->n_entries; k++) {
		const merge_entry_t *d = dreg->entries[k];
		if (live(d) && entry_says_deleted(d) && deletion_saw(d, e))
			return true;
	}
	return false;
}

/* Whether any live value of reg is unseen by every live deletion of dreg. */
static bool has_unseen(const merge_reg_t *reg, const merge_reg_t *dreg)
{
	for (size_t j = 0; j < reg->n_entries; j++)
		if (live(reg->entries[j]) && !some_deletion_saw(dreg, reg->entries[j]))
			return true;
	return false;
}

/* The registers of one instance are consecutive, its removal (field 0)
 * first: [*i, end). */
static size_t instance_end(const merge_rec_t *rec, size_t i)
{
	size_t end = i + 1;
	while (end < rec->n_registers && rec->registers[end]->instance.len == 16 &&
	       !memcmp(rec->registers[end]->instance.data, rec->registers[i]->instance.data, 16))
		end++;
	return end;
}

bool merge_instance_removed(const merge_rec_t *rec, const uint8_t instance[16])
{
	return entry_says_deleted(merge_current(merge_register_in(rec, instance, MERGE_DELETION_FIELD)));
}

/* Whether a live value of reg links to a removed instance. */
static bool links_removed(const merge_rec_t *rec, const merge_reg_t *reg)
{
	for (size_t j = 0; j < reg->n_entries; j++) {
		const merge_entry_t *e = reg->entries[j];
		struct form_value v;
		if (live(e) && form_value_parse(e->value.data, e->value.len, &v) == 0 &&
		    v.kind == FT_LINK && v.str_len == 16 && merge_instance_removed(rec, v.str))
			return true;
	}
	return false;
}

int merge_instance_flag(const merge_rec_t *rec, const uint8_t instance[16])
{
	size_t at;
	const merge_reg_t *dreg = find_reg(rec, instance, MERGE_DELETION_FIELD, &at);
	if (merge_instance_removed(rec, instance)) {
		for (size_t i = at + 1; i < instance_end(rec, at); i++)
			if (has_unseen(rec->registers[i], dreg))
				return 1;
		for (size_t i = 0; i < rec->n_registers; i++) {
			const merge_reg_t *g = rec->registers[i];
			if (g->instance.len && merge_instance_removed(rec, g->instance.data))
				continue; /* a link of a removed instance went with it */
			for (size_t j = 0; j < g->n_entries; j++) {
				const merge_entry_t *e = g->entries[j];
				struct form_value v;
				if (live(e) && form_value_parse(e->value.data, e->value.len, &v) == 0 &&
				    v.kind == FT_LINK && v.str_len == 16 && !memcmp(v.str, instance, 16))
					return 2;
			}
		}
	}
	return 0;
}

static void recount(merge_rec_t *rec)
{
	uint32_t n = 0, flags = 0;
	const merge_reg_t *dreg = merge_register(rec, MERGE_DELETION_FIELD);
	bool deleted = entry_says_deleted(merge_current(dreg));
	bool flag = false;

	/* links can dangle only when some instance is removed: most records
	 * have none, and their values are not parsed for links */
	bool any_removed = false;
	for (size_t i = rec->n_registers; i-- > 0 && !any_removed;) {
		const merge_reg_t *reg = rec->registers[i];
		if (!reg->instance.len)
			break; /* the record's own registers come first */
		any_removed = reg->field == MERGE_DELETION_FIELD &&
			      entry_says_deleted(merge_current(reg));
	}
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		n += merge_in_conflict(reg);
		/* a link held by a removed instance went with it */
		flags += any_removed && links_removed(rec, reg) &&
			 !(reg->instance.len && merge_instance_removed(rec, reg->instance.data));
		/* the record's deletion: an edit anywhere it had not seen */
		if (deleted && !flag && !(reg->field == MERGE_DELETION_FIELD && !reg->instance.len))
			flag = has_unseen(reg, dreg);
	}
	/* a removed instance: an edit of it that no live removal saw */
	for (size_t i = 0; i < rec->n_registers;) {
		const merge_reg_t *reg = rec->registers[i];
		if (!reg->instance.len) {
			i++;
			continue;
		}
		size_t end = instance_end(rec, i);
		const merge_reg_t *ireg = reg->field == MERGE_DELETION_FIELD ? reg : NULL;
		if (ireg && entry_says_deleted(merge_current(ireg))) {
			for (size_t k = i + 1; k < end; k++)
				if (has_unseen(rec->registers[k], ireg)) {
					flags++;
					break;
				}
		}
		i = end;
	}
	rec->delete_conflict = flag;
	rec->conflicts = n + flag + flags;
}

static int add_sorted_u64(struct arena *a, uint64_t **arr, size_t *n, uint64_t v)
{
	size_t lo = 0, hi = *n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if ((*arr)[mid] == v)
			return 0;
		if ((*arr)[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	uint64_t *na = arena_alloc(a, (*n + 1) * sizeof(*na));
	if (!na)
		return -ENOMEM;
	if (lo)
		memcpy(na, *arr, lo * sizeof(*na));
	na[lo] = v;
	if (*n > lo)
		memcpy(na + lo + 1, *arr + lo, (*n - lo) * sizeof(*na));
	*arr = na;
	(*n)++;
	return 0;
}

int merge_apply(struct arena *a, merge_rec_t *rec, const struct merge_change *c)
{
	if (add_registers(a, rec, c) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		size_t at;
		merge_reg_t *reg = find_reg(rec, inst_id(w), w->field, &at);
		if (w->n_base) {
			/* room for every base to become a tombstone, grown once */
			merge_pb_stamp_t **na =
				arena_alloc(a, (reg->n_tombstones + w->n_base) * sizeof(*na));
			if (!na)
				return -ENOMEM;
			if (reg->n_tombstones)
				memcpy(na, reg->tombstones, reg->n_tombstones * sizeof(*na));
			reg->tombstones = na;
		}
		for (size_t k = 0; k < w->n_base; k++)
			if (apply_base(a, reg, w->base[k], w->n_base - k) < 0)
				return -ENOMEM;
		if (apply_write(a, reg, c, w) < 0)
			return -ENOMEM;
	}
	if (c->form_version > rec->form_version)
		rec->form_version = c->form_version;
	if (add_sorted_u64(a, &rec->writers, &rec->n_writers, c->device) < 0)
		return -ENOMEM;
	recount(rec);
	return 0;
}

static void hash_u64(crypto_generichash_state *st, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_generichash_update(st, b, 8);
}

void merge_digest(const merge_rec_t *rec, uint8_t out[32])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, rec->record_id.data, rec->record_id.len);
	hash_u64(&st, strlen(rec->form_id));
	crypto_generichash_update(&st, (const uint8_t *)rec->form_id, strlen(rec->form_id));
	hash_u64(&st, rec->form_version);
	hash_u64(&st, rec->n_registers);
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		hash_u64(&st, reg->instance.len);
		crypto_generichash_update(&st, reg->instance.data, reg->instance.len);
		hash_u64(&st, reg->field);
		hash_u64(&st, reg->n_entries);
		for (size_t j = 0; j < reg->n_entries; j++) {
			const merge_entry_t *e = reg->entries[j];
			hash_u64(&st, e->device);
			hash_u64(&st, e->hlc);
			hash_u64(&st, e->seq);
			hash_u64(&st, (uint64_t)e->dead << 1 | !e->pending);
			hash_u64(&st, e->value.len);
			crypto_generichash_update(&st, e->value.data, e->value.len);
			hash_u64(&st, e->n_seen);
			for (size_t k = 0; k < e->n_seen; k++) {
				hash_u64(&st, e->seen[k]->hlc);
				hash_u64(&st, e->seen[k]->device);
			}
		}
		hash_u64(&st, reg->n_tombstones);
		for (size_t k = 0; k < reg->n_tombstones; k++) {
			hash_u64(&st, reg->tombstones[k]->hlc);
			hash_u64(&st, reg->tombstones[k]->device);
		}
	}
	hash_u64(&st, rec->conflicts);
	crypto_generichash_final(&st, out, 32);
}

void merge_rec_expand(merge_rec_t *rec)
{
	for (size_t i = 0; i < rec->n_registers; i++)
		for (size_t j = 0; j < rec->registers[i]->n_entries; j++) {
			merge_entry_t *e = rec->registers[i]->entries[j];
			if (!e->device)
				e->device = rec->base_device;
			if (!e->hlc)
				e->hlc = rec->base_hlc;
			if (!e->seq)
				e->seq = rec->base_seq;
		}
	rec->base_device = rec->base_hlc = rec->base_seq = 0;
}

void merge_rec_compact(merge_rec_t *rec)
{
	/* The first entry of the first field register is the creator's
	 * stamp in nearly every record: a good base. */
	rec->base_device = rec->base_hlc = rec->base_seq = 0;
	for (size_t i = 0; i < rec->n_registers && !rec->base_device; i++)
		if (rec->registers[i]->field != MERGE_DELETION_FIELD && rec->registers[i]->n_entries) {
			rec->base_device = rec->registers[i]->entries[0]->device;
			rec->base_hlc = rec->registers[i]->entries[0]->hlc;
			rec->base_seq = rec->registers[i]->entries[0]->seq;
		}
	for (size_t i = 0; i < rec->n_registers; i++)
		for (size_t j = 0; j < rec->registers[i]->n_entries; j++) {
			merge_entry_t *e = rec->registers[i]->entries[j];
			if (e->device == rec->base_device)
				e->device = 0;
			if (e->hlc == rec->base_hlc)
				e->hlc = 0;
			if (e->seq == rec->base_seq)
				e->seq = 0;
		}
}
