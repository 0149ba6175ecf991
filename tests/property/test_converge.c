/* Property: the merge converges, to the right result. 20 simulated phones
 * make thousands of offline edits from a fixed seed (creates, concurrent
 * edits of the same fields, clears, deletes and undeletes with what they
 * had seen, edits after deletes), learning each other's changes now and
 * then as pulls would. Their clocks are wrong as phones' are: some days
 * ahead, some hours behind, the others right; none moves its clock from
 * the stamps it pulls (the protocol's rule). Some bases name writes that
 * never come (a broken or hostile app). The records exist, and are
 * assigned to the phones that pulled them, before the other changes
 * arrive; then every change is applied to fresh stores in 50 random
 * orders, with random duplicates, in random batches, at random server
 * times. Every store must end with the same records digest and the same
 * open conflicts, its change log must hold every change exactly once, and
 * each of its records must be what a reference model of the rule (below: the
 * rule of merge.h computed naively from the set of all writes, sharing no
 * code with merge.c) says it is.
 *
 * SEED=n in the environment replays a run; the seed is printed first. */
#include <inttypes.h>

#include "check.h"
#include "codec.h"
#include "common.h"
#include "gen.h"
#include "hlc.h"
#include "merge.h"
#include "testutil.h"

#define N_DEV 20
#define ROUNDS 12
#define N_ORDERS 50

struct sim_change {
	uint64_t device;
	uint64_t change_id;
	size_t record;             /* index in records[] */
	struct merge_write *w;     /* its writes, for the phones' replicas */
	size_t n_w;
	struct merge_stamp *seen;  /* its deletion's view */
	size_t n_seen;
	bool create;
	uint8_t *bytes;            /* the encoded Change */
	size_t len;
};

struct phone {
	uint64_t id;
	uint64_t next_change;
	int64_t offset_ms;     /* how wrong its clock is */
	struct hlc clock;
	merge_rec_t **replica; /* per record: its local merged copy, or NULL */
	uint8_t *applied;      /* per change: already in its replica */
};

static struct arena *A;
static struct gen_rng R;
static struct sim_change *changes;
static size_t n_changes, cap_changes;
static uint8_t (*records)[16];
static size_t n_records, cap_records;
static struct phone phones[N_DEV];
static const struct form *F;
static uint64_t wall;

static void grow(void **p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return;
	*cap = *cap ? *cap * 2 : 1024;
	*p = realloc(*p, *cap * size);
	CHECK(*p);
}

static void replica_apply(struct phone *p, const struct sim_change *c)
{
	if (!p->replica[c->record])
		p->replica[c->record] = merge_rec_new(A, records[c->record], "incident_report");
	struct merge_change mc = {.device = c->device, .form_version = 1, .writes = c->w,
				  .n_writes = c->n_w};
	mc.seq = c->change_id;
	mc.seen = c->seen;
	mc.n_seen = c->n_seen;
	CHECK(merge_apply(A, p->replica[c->record], &mc) == 0);
	p->applied[c - changes] = 1;
}

static uint64_t phone_now(const struct phone *p)
{
	return (uint64_t)((int64_t)wall + p->offset_ms);
}

static void add_change(struct phone *p, Shahidi__V1__Change *c, size_t record,
		       struct merge_write *w, size_t n_w, struct merge_stamp *seen, size_t n_seen)
{
	grow((void **)&changes, &cap_changes, n_changes, sizeof(*changes));
	struct sim_change *sc = &changes[n_changes++];
	sc->seen = seen;
	sc->n_seen = n_seen;
	sc->create = c->create;
	sc->device = p->id;
	sc->change_id = c->change_id;
	sc->record = record;
	sc->w = w;
	sc->n_w = n_w;
	sc->len = shahidi__v1__change__get_packed_size(c);
	sc->bytes = arena_alloc(A, sc->len);
	shahidi__v1__change__pack(c, sc->bytes);
	for (int i = 0; i < N_DEV; i++) {
		phones[i].applied = realloc(phones[i].applied, cap_changes);
		phones[i].applied[n_changes - 1] = 0;
	}
	replica_apply(p, sc);
}

static void create(struct phone *p)
{
	uint64_t hlc = hlc_tick(&p->clock, phone_now(p));
	/* dates in the report as the phone's calendar says (never ahead of
	 * the server's, or they would be refused as future dates) */
	Shahidi__V1__Change *c = gen_report(&R, A, F, p->next_change++, hlc,
					    SH_MIN(hlc_ms(hlc), wall));
	CHECK(c);
	grow((void **)&records, &cap_records, n_records, sizeof(*records));
	memcpy(records[n_records], c->record_id.data, 16);
	for (int i = 0; i < N_DEV; i++) {
		phones[i].replica = realloc(phones[i].replica, cap_records * sizeof(merge_rec_t *));
		phones[i].replica[n_records] = NULL;
	}
	struct merge_write *w = arena_zalloc(A, c->n_fields * sizeof(*w));
	for (size_t i = 0; i < c->n_fields; i++) {
		ProtobufCBinaryData v = gen_pack_value(A, c->fields[i]->value);
		w[i] = (struct merge_write){.field = c->fields[i]->field, .hlc = hlc,
					    .value = v.data, .value_len = v.len};
	}
	add_change(p, c, n_records++, w, c->n_fields, NULL, 0);
}

/* The stamps of the live values of a register in p's replica: the base of
 * an edit made on that phone. */
static void base_of(const merge_reg_t *reg, struct merge_stamp **ret, Shahidi__V1__Stamp ***ret_pb,
		    size_t *ret_n)
{
	size_t n = merge_live_count(reg), k = 0;
	struct merge_stamp *b = arena_alloc(A, (n + 2) * sizeof(*b));
	Shahidi__V1__Stamp **pb = arena_alloc(A, (n + 2) * sizeof(*pb));
	for (size_t i = 0; reg && i < reg->n_entries; i++) {
		const merge_entry_t *e = reg->entries[i];
		if (e->dead || e->pending)
			continue;
		b[k] = (struct merge_stamp){e->hlc, e->device};
		pb[k] = arena_alloc(A, sizeof(**pb));
		shahidi__v1__stamp__init(pb[k]);
		pb[k]->hlc = e->hlc;
		pb[k]->device = e->device;
		k++;
	}
	if (gen_below(&R, 25) == 0) {
		/* a base naming a write that never comes: up to days ahead, of
		 * any phone (a broken or hostile app) */
		uint64_t dev = 0x1000 + gen_below(&R, N_DEV) * 0x10001;
		uint64_t h = hlc_make(wall + gen_below(&R, 4ull * 86400000), gen_below(&R, 5));
		b[k] = (struct merge_stamp){h, dev};
		pb[k] = arena_alloc(A, sizeof(**pb));
		shahidi__v1__stamp__init(pb[k]);
		pb[k]->hlc = h;
		pb[k]->device = dev;
		k++;
	}
	*ret = b;
	*ret_pb = pb;
	*ret_n = k;
}

/* A deletion's view: the stamps of every live value of the record in p's
 * replica, each once. */
static void seen_of(const merge_rec_t *rec, struct merge_stamp **ret, Shahidi__V1__Stamp ***ret_pb,
		    size_t *ret_n)
{
	size_t cap = 1, k = 0;
	for (size_t i = 0; i < rec->n_registers; i++)
		cap += rec->registers[i]->n_entries;
	struct merge_stamp *b = arena_alloc(A, cap * sizeof(*b));
	Shahidi__V1__Stamp **pb = arena_alloc(A, cap * sizeof(*pb));
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		for (size_t j = 0; reg->field && j < reg->n_entries; j++) {
			const merge_entry_t *e = reg->entries[j];
			bool dup = e->dead;
			for (size_t m = 0; m < k && !dup; m++)
				dup = b[m].hlc == e->hlc && b[m].device == e->device;
			if (dup)
				continue;
			b[k] = (struct merge_stamp){e->hlc, e->device};
			pb[k] = arena_alloc(A, sizeof(**pb));
			shahidi__v1__stamp__init(pb[k]);
			pb[k]->hlc = e->hlc;
			pb[k]->device = e->device;
			k++;
		}
	}
	*ret = b;
	*ret_pb = pb;
	*ret_n = k;
}

static const uint32_t edit_fields[] = {140, 142, 62, 124, 35, 59, 143, 142};

/* The phone's next change to record rec, stamped now by its clock. */
static Shahidi__V1__Change *new_change(struct phone *p, size_t rec, uint32_t form_version)
{
	Shahidi__V1__Change *c = arena_zalloc(A, sizeof(*c));
	shahidi__v1__change__init(c);
	c->change_id = p->next_change++;
	c->record_id = (ProtobufCBinaryData){16, records[rec]};
	c->form_id = "incident_report";
	c->form_version = form_version;
	c->hlc = hlc_tick(&p->clock, phone_now(p));
	return c;
}

static void edit_group(struct phone *p, size_t rec);

static void edit(struct phone *p)
{
	size_t known[4096], nk = 0;
	for (size_t r = 0; r < n_records && nk < SH_ARRAY_SIZE(known); r++)
		if (p->replica[r])
			known[nk++] = r;
	if (!nk)
		return;
	size_t rec = known[gen_below(&R, nk)];
	if (gen_below(&R, 2) == 0) {
		/* mostly records whose groups others write too: concurrent adds,
		 * edits and removals of the same instances */
		for (int tries = 0; tries < 8; tries++) {
			size_t r2 = known[gen_below(&R, nk)];
			const merge_rec_t *m = p->replica[r2];
			if (m->n_writers > 1 && m->n_registers && merge_reg_in_instance(m->registers[m->n_registers - 1])) {
				rec = r2;
				break;
			}
		}
		edit_group(p, rec);
		return;
	}
	merge_rec_t *mine = p->replica[rec];
	Shahidi__V1__Change *c = new_change(p, rec, 1);
	uint64_t hlc = c->hlc;
	size_t nf = 1 + gen_below(&R, 2);
	struct merge_write *w = arena_zalloc(A, (nf + 1) * sizeof(*w));
	c->fields = arena_zalloc(A, (nf + 1) * sizeof(*c->fields));
	size_t n_w = 0;
	uint32_t used = 0;
	for (size_t i = 0; i < nf; i++) {
		uint32_t field = edit_fields[gen_below(&R, SH_ARRAY_SIZE(edit_fields))];
		if (field == used)
			continue;
		used = field;
		const struct form_field *fd = form_field(F, field);
		Shahidi__V1__FieldWrite *fw = arena_zalloc(A, sizeof(*fw));
		shahidi__v1__field_write__init(fw);
		fw->field = field;
		/* now and then a caseworker is cleared */
		bool clear = field == 142 && gen_below(&R, 4) == 0;
		fw->value = clear ? NULL : gen_value(&R, A, fd, SH_MIN(hlc_ms(hlc), wall));
		ProtobufCBinaryData v = {0, NULL};
		if (fw->value)
			v = gen_pack_value(A, fw->value);
		base_of(merge_register(mine, field), (struct merge_stamp **)&w[n_w].base,
			&fw->supersedes, &fw->n_supersedes);
		w[n_w].n_base = fw->n_supersedes;
		w[n_w].field = field;
		w[n_w].hlc = hlc;
		w[n_w].value = v.data;
		w[n_w].value_len = v.len;
		c->fields[c->n_fields++] = fw;
		n_w++;
	}
	struct merge_stamp *seen = NULL;
	size_t n_seen = 0;
	if (gen_below(&R, 8) == 0) {
		/* delete, or undo a deletion, with what it had seen (mostly) */
		Shahidi__V1__Deletion *d = arena_zalloc(A, sizeof(*d));
		shahidi__v1__deletion__init(d);
		d->deleted = !merge_is_deleted(mine);
		if (gen_below(&R, 5)) {
			seen_of(mine, &seen, &d->seen, &d->n_seen);
			n_seen = d->n_seen;
		}
		base_of(merge_register(mine, MERGE_DELETION_FIELD), (struct merge_stamp **)&w[n_w].base,
			&d->supersedes, &d->n_supersedes);
		w[n_w].n_base = d->n_supersedes;
		w[n_w].field = MERGE_DELETION_FIELD;
		w[n_w].hlc = hlc;
		w[n_w].value = merge_deletion_value(d->deleted, &w[n_w].value_len);
		c->deletion = d;
		n_w++;
	}
	add_change(p, c, rec, w, n_w, seen, n_seen);
}

/* The instances p's replica knows of a record, each once (registers of one
 * instance are consecutive). */
static size_t known_instances(const merge_rec_t *rec, const uint8_t **out, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < rec->n_registers && n < max; i++) {
		const merge_reg_t *g = rec->registers[i];
		if (merge_reg_in_instance(g) && (!n || memcmp(out[n - 1], g->instance.data, 16)))
			out[n++] = g->instance.data;
	}
	return n;
}

/* A change to a record's repeat groups (form version 3, on a record of any
 * version): add an instance (a victim's name, a perpetrator's identifiers),
 * edit one, link an act to a victim, remove or restore one with what the
 * phone had seen of it. */
static void edit_group(struct phone *p, size_t rec)
{
	merge_rec_t *mine = p->replica[rec];
	Shahidi__V1__Change *c = new_change(p, rec, 3);
	uint64_t hlc = c->hlc;
	const uint8_t *inst[64];
	size_t ni = known_instances(mine, inst, 64);
	struct merge_write *w = arena_zalloc(A, 2 * sizeof(*w));
	struct merge_inst *in = arena_zalloc(A, sizeof(*in));
	Shahidi__V1__FieldWrite *fw = arena_zalloc(A, sizeof(*fw));
	shahidi__v1__field_write__init(fw);
	c->fields = arena_zalloc(A, 2 * sizeof(*c->fields));
	/* victims (201, a name), perpetrators (222, identifiers), acts (243,
	 * a place; 244, the victim it happened to) */
	static const uint32_t new_field[] = {201, 222, 243};
	const uint8_t *victims[64];
	size_t nv = 0;
	for (size_t i = 0; i < ni; i++)
		if (merge_register_in(mine, inst[i], 201))
			victims[nv++] = inst[i];
	uint64_t op = gen_below(&R, 10);
	if (!ni || op < 3) {
		for (int k = 0; k < 16; k++) /* a new instance: its id made here */
			in->id[k] = (uint8_t)gen_below(&R, 256);
		in->id[0] |= 1;
		fw->field = new_field[gen_below(&R, 3)];
	} else {
		memcpy(in->id, inst[gen_below(&R, ni)], 16);
		uint32_t own = merge_register_in(mine, in->id, 201)   ? 201
			       : merge_register_in(mine, in->id, 222) ? 222
			       : merge_register_in(mine, in->id, 243) ||
					 merge_register_in(mine, in->id, 244)
				       ? 243
				       : 0;
		fw->field = op < 7 ? own : 0;
		if (own == 243 && op >= 5 && op < 7 && nv)
			fw->field = 244;
	}
	const merge_reg_t *reg = merge_register_in(mine, in->id, fw->field);
	Shahidi__V1__Value *val = arena_zalloc(A, sizeof(*val));
	shahidi__v1__value__init(val);
	if (fw->field == 0) {
		/* remove (or restore) with what it had seen of the instance */
		bool removed = merge_instance_removed(mine, in->id);
		val->kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
		val->boolean = !removed;
		size_t cap = 1, k = 0;
		for (size_t i = 0; i < mine->n_registers; i++)
			cap += mine->registers[i]->n_entries;
		struct merge_stamp *seen = arena_alloc(A, cap * sizeof(*seen));
		fw->seen = arena_alloc(A, cap * sizeof(*fw->seen));
		for (size_t i = 0; !removed && i < mine->n_registers; i++) {
			const merge_reg_t *g = mine->registers[i];
			if (!merge_reg_in_instance(g) || memcmp(g->instance.data, in->id, 16) || !g->field)
				continue;
			for (size_t j = 0; j < g->n_entries; j++) {
				const merge_entry_t *e = g->entries[j];
				if (e->dead)
					continue;
				seen[k] = (struct merge_stamp){e->hlc, e->device};
				fw->seen[k] = arena_alloc(A, sizeof(**fw->seen));
				shahidi__v1__stamp__init(fw->seen[k]);
				fw->seen[k]->hlc = e->hlc;
				fw->seen[k]->device = e->device;
				k++;
			}
		}
		fw->n_seen = k;
		in->seen = seen;
		in->n_seen = k;
	} else if (fw->field == 244) {
		/* an act (this instance) names a victim: any instance it knows */
		uint8_t *to = arena_alloc(A, 16);
		memcpy(to, victims[gen_below(&R, nv)], 16);
		val->kind_case = SHAHIDI__V1__VALUE__KIND_LINK;
		val->link = (ProtobufCBinaryData){16, to};
	} else {
		char *t = arena_alloc(A, 24);
		snprintf(t, 24, "n%llu", (unsigned long long)gen_below(&R, 1000000));
		val->kind_case = SHAHIDI__V1__VALUE__KIND_TEXT;
		val->text = t;
	}
	fw->value = val;
	fw->instance = (ProtobufCBinaryData){16, in->id};
	ProtobufCBinaryData v = gen_pack_value(A, val);
	base_of(reg, (struct merge_stamp **)&w[0].base, &fw->supersedes, &fw->n_supersedes);
	w[0].n_base = (uint32_t)fw->n_supersedes;
	w[0].field = fw->field;
	w[0].hlc = hlc;
	w[0].value = v.data;
	w[0].value_len = v.len;
	w[0].inst = in;
	c->fields[c->n_fields++] = fw;
	add_change(p, c, rec, w, 1, NULL, 0);
}

/* A pull: p learns every change to the records it holds, and sometimes a
 * record a coordinator assigned to it. */
static void pull(struct phone *p)
{
	if (n_records && gen_below(&R, 3) == 0) {
		size_t r = gen_below(&R, n_records);
		if (!p->replica[r])
			p->replica[r] = merge_rec_new(A, records[r], "incident_report");
	}
	for (size_t i = 0; i < n_changes; i++)
		if (!p->applied[i] && p->replica[changes[i].record])
			replica_apply(p, &changes[i]);
}

static void simulate(void)
{
	for (int i = 0; i < N_DEV; i++) {
		phones[i].id = 0x1000 + (uint64_t)i * 0x10001;
		phones[i].next_change = 1;
		phones[i].clock.max_skew_ms = 3600 * 1000;
		/* a quarter days ahead, a quarter hours behind, the rest right */
		if (i % 4 == 1)
			phones[i].offset_ms = (int64_t)(86400000 + gen_below(&R, 2 * 86400000));
		else if (i % 4 == 2)
			phones[i].offset_ms = -(int64_t)(3600000 + gen_below(&R, 5 * 3600000));
	}
	wall = sh_now_ms() - 3600 * 1000;
	for (int round = 0; round < ROUNDS; round++) {
		for (int i = 0; i < N_DEV; i++) {
			struct phone *p = &phones[i];
			uint64_t ops = 5 + gen_below(&R, 15);
			for (uint64_t k = 0; k < ops; k++) {
				wall += gen_below(&R, 3); /* clocks stall and tie */
				if (gen_below(&R, 10) < 3)
					create(p);
				else
					edit(p);
			}
			if (gen_below(&R, 2))
				pull(p);
		}
	}
}

/* ---- the reference model ----
 *
 * The rule as merge.h states it, computed from the set of every write made
 * to a record, the slow and obvious way. Nothing here calls merge.c. */

/* The changes of each record, in the order they were made: rec_changes
 * [rec_first[r], rec_first[r + 1]) index changes[] (made once, after the
 * simulation, so that every store can be checked in reasonable time). */
static size_t *rec_first, *rec_changes;

static void index_records(void)
{
	rec_first = calloc(n_records + 1, sizeof(*rec_first));
	rec_changes = malloc(n_changes * sizeof(*rec_changes));
	CHECK(rec_first && rec_changes);
	for (size_t i = 0; i < n_changes; i++)
		rec_first[changes[i].record + 1]++;
	for (size_t r = 0; r < n_records; r++)
		rec_first[r + 1] += rec_first[r];
	size_t *fill = calloc(n_records, sizeof(*fill));
	CHECK(fill);
	for (size_t i = 0; i < n_changes; i++) {
		size_t r = changes[i].record;
		rec_changes[rec_first[r] + fill[r]++] = i;
	}
	free(fill);
}

struct ref_w {
	uint64_t device, seq, hlc;
	const uint8_t *val;
	size_t len;
	const struct sim_change *c;
	const struct merge_write *w;
};

static int bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int r = n ? memcmp(a, b, n) : 0;
	return r ? r : (alen > blen) - (alen < blen);
}

/* A register's key: (instance or NULL, field). */
struct ref_key {
	const uint8_t *inst;
	uint32_t field;
};

static bool key_eq(const struct merge_write *w, struct ref_key k)
{
	if (w->field != k.field || !w->inst != !k.inst)
		return false;
	return !k.inst || !memcmp(w->inst->id, k.inst, 16);
}

/* Whether (hlc, device) is named by the base of any write to register k
 * of record rec. */
static bool ref_named(size_t rec, struct ref_key k, uint64_t hlc, uint64_t device)
{
	for (size_t q = rec_first[rec]; q < rec_first[rec + 1]; q++) {
		const struct sim_change *c = &changes[rec_changes[q]];
		for (size_t j = 0; j < c->n_w; j++) {
			const struct merge_write *w = &c->w[j];
			for (size_t b = 0; key_eq(w, k) && b < w->n_base; b++)
				if (w->base[b].hlc == hlc && w->base[b].device == device)
					return true;
		}
	}
	return false;
}

/* The live writes of register k of record rec: each device's latest (by
 * change id, then stamp, then value) that no base names. */
static size_t ref_live(size_t rec, struct ref_key k, struct ref_w *out)
{
	size_t n = 0;
	for (int d = 0; d < N_DEV; d++) {
		struct ref_w best = {0};
		const struct merge_write *bw = NULL;
		bool any = false;
		for (size_t q = rec_first[rec]; q < rec_first[rec + 1]; q++) {
			const struct sim_change *c = &changes[rec_changes[q]];
			if (c->device != phones[d].id)
				continue;
			for (size_t j = 0; j < c->n_w; j++) {
				const struct merge_write *w = &c->w[j];
				if (!key_eq(w, k))
					continue;
				struct ref_w x = {c->device, c->change_id, w->hlc, w->value, w->value_len, c};
				if (!any || x.seq > best.seq ||
				    (x.seq == best.seq && (x.hlc > best.hlc ||
				     (x.hlc == best.hlc && bytes_cmp(x.val, x.len, best.val, best.len) > 0)))) {
					best = x;
					bw = w;
				}
				any = true;
			}
		}
		if (any && !ref_named(rec, k, best.hlc, best.device)) {
			best.w = bw;
			out[n++] = best;
		}
	}
	return n;
}

static const struct ref_w *ref_shown(const struct ref_w *live, size_t n)
{
	const struct ref_w *best = NULL;
	for (size_t i = 0; i < n; i++)
		if (!best || live[i].hlc > best->hlc ||
		    (live[i].hlc == best->hlc && live[i].device > best->device))
			best = &live[i];
	return best;
}

static bool ref_conflict(const struct ref_w *live, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (bytes_cmp(live[0].val, live[0].len, live[i].val, live[i].len))
			return true;
	return false;
}

/* A deletion's or a removal's value: Value{boolean: true}, as protobuf-c
 * packs it (not merge_deletion_value: the model takes nothing from merge.c). */
static bool says_deleted(const uint8_t *v, size_t len)
{
	Shahidi__V1__Value t = SHAHIDI__V1__VALUE__INIT;
	uint8_t want[8];
	t.kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
	t.boolean = true;
	size_t n = shahidi__v1__value__pack(&t, want);
	return len == n && !memcmp(v, want, n);
}

/* Whether deletion d (of the record, or of an instance: its own view) saw
 * live write x. */
static bool ref_saw(const struct ref_w *d, const struct ref_w *x)
{
	if (d->device == x->device)
		return true;
	const struct merge_stamp *seen = d->w->inst ? d->w->inst->seen : d->c->seen;
	size_t n_seen = d->w->inst ? d->w->inst->n_seen : d->c->n_seen;
	for (size_t q = 0; q < n_seen; q++)
		if (seen[q].hlc == x->hlc && seen[q].device == x->device)
			return true;
	return false;
}

/* Whether any live value of the n in live is unseen by every live
 * deletion (saying deleted) of the nd in dlive. */
static bool ref_unseen(const struct ref_w *live, size_t n, const struct ref_w *dlive, size_t nd)
{
	for (size_t i = 0; i < n; i++) {
		bool saw = false;
		for (size_t k = 0; k < nd && !saw; k++)
			saw = says_deleted(dlive[k].val, dlive[k].len) && ref_saw(&dlive[k], &live[i]);
		if (!saw)
			return true;
	}
	return false;
}

static bool ref_removed(size_t rec, const uint8_t *inst)
{
	struct ref_w dl[N_DEV];
	size_t nd = ref_live(rec, (struct ref_key){inst, 0}, dl);
	const struct ref_w *cur = ref_shown(dl, nd);
	return cur && says_deleted(cur->val, cur->len);
}

static void check_reference(struct store *s, bool say)
{
	struct arena *a = arena_new();
	struct store_txn *t;
	struct ref_w live[N_DEV], dlive[N_DEV];
	uint64_t flagged = 0, conflicted = 0, tombs = 0, hidden_by_stamp = 0, instances = 0,
		 inst_flags = 0;
	CHECK(store_begin(s, false, &t) == 0);
	for (size_t r = 0; r < n_records; r++) {
		merge_rec_t *rec;
		CHECK(store_record_get(t, a, records[r], &rec) == 0);
		struct ref_key keys[512];
		size_t nk = 0;
		for (size_t q = rec_first[r]; q < rec_first[r + 1]; q++)
			for (size_t k = 0; k < changes[rec_changes[q]].n_w; k++) {
				const struct merge_write *w = &changes[rec_changes[q]].w[k];
				bool have = false;
				for (size_t m = 0; m < nk && !have; m++)
					have = key_eq(w, keys[m]);
				if (!have) {
					CHECK(nk < 512);
					keys[nk++] = (struct ref_key){w->inst ? w->inst->id : NULL, w->field};
				}
			}
		size_t nd = ref_live(r, (struct ref_key){NULL, MERGE_DELETION_FIELD}, dlive);
		const struct ref_w *del = ref_shown(dlive, nd);
		bool deleted = del && says_deleted(del->val, del->len), flag = false;
		uint32_t n_conf = 0, n_flags = 0;
		for (size_t m = 0; m < nk; m++) {
			struct ref_key k = keys[m];
			size_t n = ref_live(r, k, live);
			const merge_reg_t *reg = merge_register_in(rec, k.inst, k.field);
			CHECK(reg != NULL);
			tombs += reg->n_tombstones;
			instances += k.inst && k.field == 0;
			/* the same live values, and the same one shown */
			CHECK_EQ_INT(merge_live_count(reg), n);
			for (size_t i = 0; i < n; i++) {
				bool found = false;
				for (size_t j = 0; j < reg->n_entries && !found; j++) {
					const merge_entry_t *e = reg->entries[j];
					found = !e->dead && e->device == live[i].device &&
						e->hlc == live[i].hlc &&
						!bytes_cmp(e->value.data, e->value.len, live[i].val, live[i].len);
				}
				CHECK(found);
			}
			const struct ref_w *shown = ref_shown(live, n);
			const merge_entry_t *cur = merge_current(reg);
			CHECK(!shown == !cur);
			CHECK(!cur || (cur->device == shown->device && cur->hlc == shown->hlc));
			n_conf += ref_conflict(live, n);
			/* a live link to a removed instance */
			bool dangling = false;
			for (size_t i = 0; i < n && !dangling && !(k.inst && ref_removed(r, k.inst)); i++)
				dangling = live[i].len == 18 && live[i].val[0] == 0x62 &&
					   ref_removed(r, live[i].val + 2);
			n_flags += dangling;
			/* an edit the record's deletion had not seen */
			if (!deleted || flag || (!k.inst && !k.field))
				continue;
			if (ref_unseen(live, n, dlive, nd)) {
				flag = true;
				for (size_t i = 0; i < n; i++)
					hidden_by_stamp += live[i].hlc < del->hlc;
			}
		}
		/* a removed instance: an edit of it that no live removal saw */
		for (size_t m = 0; m < nk; m++) {
			if (!keys[m].inst || keys[m].field || !ref_removed(r, keys[m].inst))
				continue;
			struct ref_w rl[N_DEV];
			size_t nr = ref_live(r, keys[m], rl);
			bool unseen = false;
			for (size_t q = 0; q < nk && !unseen; q++) {
				if (!keys[q].inst || !keys[q].field ||
				    memcmp(keys[q].inst, keys[m].inst, 16))
					continue;
				size_t n = ref_live(r, keys[q], live);
				unseen = ref_unseen(live, n, rl, nr);
			}
			n_flags += unseen;
			inst_flags += unseen;
		}
		CHECK_EQ_INT(rec->delete_conflict, flag);
		CHECK_EQ_INT(rec->conflicts, n_conf + flag + n_flags);
		flagged += flag;
		conflicted += rec->conflicts > 0;
		arena_reset(a);
	}
	store_abort(t);
	arena_free(a);
	if (say)
		fprintf(stderr, "reference model: %zu records agree; %" PRIu64 " with conflicts, %" PRIu64
				" flagged for an edit their deletion had not seen (%" PRIu64
				" of them stamped before it), %" PRIu64 " tombstones, %" PRIu64
				" instances removed or restored, %" PRIu64 " flagged for an unseen edit\n",
			n_records, conflicted, flagged, hidden_by_stamp, tombs, instances, inst_flags);
	/* the run must exercise what it claims to */
	CHECK(flagged > 0 && hidden_by_stamp > 0 && tombs > 0 && instances > 0 && inst_flags > 0);
}

/* One run: all changes in a random order with duplicates, in batches of
 * one phone's changes, into a fresh store. */
struct run_ctx {
	struct sync_batch **batches;
	size_t n;
	unsigned rejected;
};

static int apply_all(struct store_txn *t, void *ud)
{
	struct run_ctx *c = ud;
	c->rejected = 0;
	for (size_t i = 0; i < c->n; i++) {
		struct sync_result res;
		/* at any server time within two hours: arrival time is no input */
		uint64_t now = sh_now_ms() - gen_below(&R, 2 * 3600 * 1000);
		int r = sync_apply(t, c->batches[i], now, &res);
		if (r < 0)
			return r;
		c->rejected += res.rejected;
		if (res.rejected && getenv("SHOW_REJECTS"))
			fprintf(stderr, "rejected: %.*s\n", (int)res.response_len, res.response);
	}
	return 0;
}

/* Every phone that pulled a record it did not create holds it, as a
 * coordinator's assignment makes it hold it. */
static int assign_all(struct store_txn *t, void *ud)
{
	(void)ud;
	struct arena *a = arena_new();
	int r = 0;
	for (size_t i = 0; i < n_changes && r == 0; i++) {
		if (!changes[i].create)
			continue;
		size_t rec = changes[i].record;
		for (int d = 0; d < N_DEV && r == 0; d++)
			if (phones[d].id != changes[i].device && phones[d].replica[rec])
				r = store_assign(t, a, records[rec], phones[d].id);
	}
	arena_free(a);
	return r;
}

/* Decodes the changes seq[from..to) into batches of one phone's changes. */
static void make_batches(const struct form_registry *forms, const size_t *seq, size_t from,
			 size_t to, uint64_t *batch_seq, struct run_ctx *ctx, struct buf *body)
{
	struct sync_limits lim;
	sync_limits_default(&lim);
	for (size_t i = from; i < to;) {
		uint64_t dev = changes[seq[i]].device;
		int di = (int)((dev - 0x1000) / 0x10001);
		size_t max = 1 + gen_below(&R, 50);
		buf_reset(body);
		codec_pb_put_fixed64(body, 1, dev);
		codec_pb_put_uint(body, 2, ++batch_seq[di]);
		size_t k = 0;
		while (i < to && k < max && changes[seq[i]].device == dev) {
			codec_pb_put_bytes(body, 6, changes[seq[i]].bytes, changes[seq[i]].len);
			i++;
			k++;
		}
		struct form_verdict v;
		CHECK(sync_decode(forms, &lim, body->data, body->len, CODEC_IDENTITY, sh_now_ms(),
				  &ctx->batches[ctx->n++], &v) == 0);
	}
}

static void shuffle(size_t *seq, size_t n)
{
	for (size_t i = n; i-- > 1;) {
		size_t j = gen_below(&R, i + 1), x = seq[i];
		seq[i] = seq[j];
		seq[j] = x;
	}
}

static void run(int order, const struct form_registry *forms, uint8_t ref[32],
		uint64_t *ref_conflicts)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct store_txn *t;
	CHECK(store_begin(s, true, &t) == 0);
	for (int i = 0; i < N_DEV; i++) {
		store_device_t d = SHAHIDI__STORE__V1__DEVICE__INIT;
		d.id = phones[i].id;
		d.name = "phone";
		d.county = "047";
		d.role = 1;
		CHECK(store_device_put(t, &d) == 0);
	}
	CHECK(store_commit(t) == 0);

	/* The order: first the creates (a record exists before anyone else
	 * can be assigned it, as on a real server), then the assignments, then
	 * a shuffle of every change, a fifth of them twice. */
	size_t n = 0, cap = n_changes * 3, n_creates = 0;
	size_t *seq = malloc(cap * sizeof(*seq));
	for (size_t i = 0; i < n_changes; i++)
		if (changes[i].create)
			seq[n++] = i;
	n_creates = n;
	shuffle(seq, n);
	for (size_t i = 0; i < n_changes; i++) {
		seq[n++] = i;
		if (gen_below(&R, 5) == 0)
			seq[n++] = i;
	}
	shuffle(seq + n_creates, n - n_creates);
	uint64_t batch_seq[N_DEV] = {0};
	struct run_ctx ctx = {.batches = calloc(n, sizeof(*ctx.batches))};
	struct buf body = {0};
	make_batches(forms, seq, 0, n_creates, batch_seq, &ctx, &body);
	CHECK(store_write(s, apply_all, &ctx) == 0);
	CHECK_EQ_INT(ctx.rejected, 0);
	CHECK(store_write(s, assign_all, NULL) == 0);
	size_t first_rest = ctx.n;
	make_batches(forms, seq, n_creates, n, batch_seq, &ctx, &body);
	struct run_ctx rest = {.batches = ctx.batches + first_rest, .n = ctx.n - first_rest};
	CHECK(store_write(s, apply_all, &rest) == 0);
	CHECK_EQ_INT(rest.rejected, 0);

	struct tu_state st;
	struct store_info info;
	tu_state(s, &st);
	CHECK(store_begin(s, false, &t) == 0);
	CHECK(store_info(t, &info) == 0);
	store_abort(t);
	/* every change exactly once, whatever the duplicates */
	CHECK_EQ_INT(st.log_entries, n_changes);
	CHECK_EQ_INT(st.n_records, n_records);
	CHECK_EQ_INT(store_verify_chain(s, NULL, NULL), 0);
	if (order == 0) {
		memcpy(ref, st.records, 32);
		*ref_conflicts = info.open_conflicts;
		fprintf(stderr, "%zu changes (%zu applied with duplicates), %zu records, %" PRIu64
				" with open conflicts\n",
			n_changes, n, n_records, info.open_conflicts);
	}
	if (memcmp(ref, st.records, 32) || info.open_conflicts != *ref_conflicts)
		fprintf(stderr, "order %d diverged\n", order);
	CHECK(!memcmp(ref, st.records, 32));
	CHECK_EQ_INT(info.open_conflicts, *ref_conflicts);
	check_reference(s, order == 0);

	for (size_t i = 0; i < ctx.n; i++)
		sync_batch_free(ctx.batches[i]);
	free(ctx.batches);
	free(seq);
	buf_free(&body);
	store_close(s);
	tu_rmrf(dir);
}

int main(void)
{
	const char *env = getenv("SEED");
	uint64_t seed = env ? strtoull(env, NULL, 10) : 20261127;
	fprintf(stderr, "seed %" PRIu64 " (replay with SEED=%" PRIu64 ")\n", seed, seed);
	R.s = seed;
	A = arena_new();
	struct form_registry *forms = tu_forms(false);
	F = form_registry_find(forms, "incident_report", 1);
	simulate();
	CHECK(n_changes >= 2000);
	index_records();

	uint8_t ref[32];
	uint64_t conflicts = 0;
	for (int order = 0; order < N_ORDERS; order++)
		run(order, forms, ref, &conflicts);
	/* the simulation must exercise what it claims to */
	CHECK(conflicts > 0);

	for (int i = 0; i < N_DEV; i++) {
		free(phones[i].replica);
		free(phones[i].applied);
	}
	free(changes);
	free(records);
	free(rec_first);
	free(rec_changes);
	form_registry_free(forms);
	arena_free(A);
	return 0;
}
