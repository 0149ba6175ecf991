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

/* Inserts ptr at index i of a pointer array, copying it into the arena. */
static void **insert_ptr(struct arena *a, void **arr, size_t n, size_t i, void *ptr)
{
	void **na = arena_alloc(a, (n + 1) * sizeof(*na));
	if (!na)
		return NULL;
	if (i)
		memcpy(na, arr, i * sizeof(*na));
	na[i] = ptr;
	if (n > i)
		memcpy(na + i + 1, arr + i, (n - i) * sizeof(*na));
	return na;
}

static merge_reg_t *find_reg(const merge_rec_t *rec, uint32_t field, size_t *ret_at)
{
	size_t lo = 0, hi = rec->n_registers;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint32_t f = rec->registers[mid]->field;
		if (f == field) {
			*ret_at = mid;
			return rec->registers[mid];
		}
		if (f < field)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_at = lo;
	return NULL;
}

const merge_reg_t *merge_register(const merge_rec_t *rec, uint32_t field)
{
	size_t at;
	return find_reg(rec, field, &at);
}

static merge_reg_t *get_reg(struct arena *a, merge_rec_t *rec, uint32_t field)
{
	size_t at;
	merge_reg_t *reg = find_reg(rec, field, &at);
	if (reg)
		return reg;
	reg = arena_alloc(a, sizeof(*reg));
	if (!reg)
		return NULL;
	shahidi__store__v1__register__init(reg);
	reg->field = field;
	void **na = insert_ptr(a, (void **)rec->registers, rec->n_registers, at, reg);
	if (!na)
		return NULL;
	rec->registers = (merge_reg_t **)na;
	rec->n_registers++;
	return reg;
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
	if (!e)
		return NULL;
	shahidi__store__v1__entry__init(e);
	e->device = device;
	void **na = insert_ptr(a, (void **)reg->entries, reg->n_entries, at, e);
	if (!na)
		return NULL;
	reg->entries = (merge_entry_t **)na;
	reg->n_entries++;
	return e;
}

static void set_dead_only(merge_entry_t *e, uint64_t hlc)
{
	e->hlc = hlc;
	e->orig_hlc = 0;
	e->dead = true;
	e->pending = true;
	e->value.data = NULL;
	e->value.len = 0;
}

/* A base stamp names a write its writer saw: that write is superseded. The
 * writer may name it by the stamp its device sent, before it learnt the
 * stamp it was stored under (clock skew). */
static int apply_base(struct arena *a, merge_reg_t *reg, struct merge_stamp b, uint64_t bound)
{
	size_t at;
	merge_entry_t *e = find_entry(reg, b.device, &at);
	if (e && e->orig_hlc && b.hlc == e->orig_hlc)
		b.hlc = e->hlc;
	else if (bound && b.hlc > bound)
		return 0;
	if (!e) {
		if (!(e = new_entry(a, reg, b.device, at)))
			return -ENOMEM;
		set_dead_only(e, b.hlc);
		return 0;
	}
	if (b.hlc > e->hlc) {
		set_dead_only(e, b.hlc);
	} else if (b.hlc == e->hlc) {
		e->dead = true;
		e->value.data = NULL;
		e->value.len = 0;
	}
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

static int apply_write(struct arena *a, merge_reg_t *reg, uint64_t device,
		       const struct merge_write *w)
{
	size_t at;
	merge_entry_t *e = find_entry(reg, device, &at);
	if (!e) {
		if (!(e = new_entry(a, reg, device, at)))
			return -ENOMEM;
	} else if (w->hlc < e->hlc) {
		return 0; /* the device wrote again later: this one is superseded */
	} else if (w->hlc == e->hlc) {
		if (e->dead) {
			e->pending = false; /* arrived after a write that saw it */
			return 0;
		}
		/* Two writes under one stamp: only a broken device does this. Keep
		 * the greater value so that the outcome does not depend on order. */
		if (value_cmp(w->value, w->value_len, e->value.data, e->value.len) <= 0)
			return 0;
	}
	e->hlc = w->hlc;
	e->orig_hlc = w->orig_hlc;
	e->dead = false;
	e->pending = false;
	e->value.data = (uint8_t *)w->value;
	e->value.len = w->value_len;
	return 0;
}

const merge_entry_t *merge_current(const merge_reg_t *reg)
{
	const merge_entry_t *best = NULL;
	if (!reg)
		return NULL;
	for (size_t i = 0; i < reg->n_entries; i++) {
		const merge_entry_t *e = reg->entries[i];
		if (e->dead || e->pending)
			continue;
		/* entries are sorted by device, so ">=" breaks hlc ties by device */
		if (!best || e->hlc >= best->hlc)
			best = e;
	}
	return best;
}

size_t merge_live_count(const merge_reg_t *reg)
{
	size_t n = 0;
	for (size_t i = 0; reg && i < reg->n_entries; i++)
		n += !reg->entries[i]->dead && !reg->entries[i]->pending;
	return n;
}

static bool entry_says_deleted(const merge_entry_t *e)
{
	struct form_value v;
	return e && form_value_parse(e->value.data, e->value.len, &v) == 0 &&
	       v.kind == FT_BOOLEAN && v.b;
}

bool merge_is_deleted(const merge_rec_t *rec)
{
	return entry_says_deleted(merge_current(merge_register(rec, MERGE_DELETION_FIELD)));
}

static void recount(merge_rec_t *rec)
{
	uint32_t n = 0;
	const merge_entry_t *del = merge_current(merge_register(rec, MERGE_DELETION_FIELD));
	bool deleted = entry_says_deleted(del);
	bool flag = false;

	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		n += merge_live_count(reg) > 1;
		if (!deleted || flag || reg->field == MERGE_DELETION_FIELD)
			continue;
		for (size_t j = 0; j < reg->n_entries; j++) {
			const merge_entry_t *e = reg->entries[j];
			if (!e->dead && !e->pending && e->hlc > del->hlc && e->device != del->device) {
				flag = true;
				break;
			}
		}
	}
	rec->delete_conflict = flag;
	rec->conflicts = n + flag;
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
	for (size_t i = 0; i < c->n_writes; i++) {
		const struct merge_write *w = &c->writes[i];
		merge_reg_t *reg = get_reg(a, rec, w->field);
		if (!reg)
			return -ENOMEM;
		for (size_t k = 0; k < w->n_base; k++)
			if (apply_base(a, reg, w->base[k], c->max_base_hlc) < 0)
				return -ENOMEM;
		if (apply_write(a, reg, c->device, w) < 0)
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
		hash_u64(&st, reg->field);
		hash_u64(&st, reg->n_entries);
		for (size_t j = 0; j < reg->n_entries; j++) {
			const merge_entry_t *e = reg->entries[j];
			hash_u64(&st, e->device);
			hash_u64(&st, e->hlc);
			hash_u64(&st, (uint64_t)e->dead << 1 | !e->pending);
			hash_u64(&st, e->value.len);
			crypto_generichash_update(&st, e->value.data, e->value.len);
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
		}
	rec->base_device = rec->base_hlc = 0;
}

void merge_rec_compact(merge_rec_t *rec)
{
	/* The first entry of the first field register is the creator's
	 * stamp in nearly every record: a good base. */
	rec->base_device = rec->base_hlc = 0;
	for (size_t i = 0; i < rec->n_registers && !rec->base_device; i++)
		if (rec->registers[i]->field != MERGE_DELETION_FIELD && rec->registers[i]->n_entries) {
			rec->base_device = rec->registers[i]->entries[0]->device;
			rec->base_hlc = rec->registers[i]->entries[0]->hlc;
		}
	for (size_t i = 0; i < rec->n_registers; i++)
		for (size_t j = 0; j < rec->registers[i]->n_entries; j++) {
			merge_entry_t *e = rec->registers[i]->entries[j];
			if (e->device == rec->base_device)
				e->device = 0;
			if (e->hlc == rec->base_hlc)
				e->hlc = 0;
		}
}
