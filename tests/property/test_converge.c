/* Property: the merge converges. 20 simulated phones make thousands of
 * offline edits from a fixed seed (creates, concurrent edits of the same
 * fields, clears, deletes and undeletes, edits after deletes), learning
 * each other's changes now and then as pulls would. All their changes are
 * then applied to fresh stores in 50 random orders, with random
 * duplicates, in random batches: every store must end with the same
 * records digest and the same open conflicts, and its change log must hold
 * every change exactly once.
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
	uint8_t *bytes;            /* the encoded Change */
	size_t len;
};

struct phone {
	uint64_t id;
	uint64_t next_change;
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
	CHECK(merge_apply(A, p->replica[c->record], &mc) == 0);
	for (size_t i = 0; i < c->n_w; i++)
		hlc_receive(&p->clock, c->w[i].hlc, wall);
	p->applied[c - changes] = 1;
}

static void add_change(struct phone *p, Shahidi__V1__Change *c, size_t record,
		       struct merge_write *w, size_t n_w)
{
	grow((void **)&changes, &cap_changes, n_changes, sizeof(*changes));
	struct sim_change *sc = &changes[n_changes++];
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
	uint64_t hlc = hlc_tick(&p->clock, wall);
	Shahidi__V1__Change *c = gen_report(&R, A, F, p->next_change++, hlc, hlc_ms(hlc));
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
	add_change(p, c, n_records++, w, c->n_fields);
}

/* The stamps of the live values of a register in p's replica: the base of
 * an edit made on that phone. */
static void base_of(const merge_reg_t *reg, struct merge_stamp **ret, Shahidi__V1__Stamp ***ret_pb,
		    size_t *ret_n)
{
	size_t n = merge_live_count(reg), k = 0;
	struct merge_stamp *b = arena_alloc(A, (n + 1) * sizeof(*b));
	Shahidi__V1__Stamp **pb = arena_alloc(A, (n + 1) * sizeof(*pb));
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
	*ret = b;
	*ret_pb = pb;
	*ret_n = k;
}

static const uint32_t edit_fields[] = {140, 142, 62, 124, 35, 59, 143, 142};

static void edit(struct phone *p)
{
	size_t known[4096], nk = 0;
	for (size_t r = 0; r < n_records && nk < SH_ARRAY_SIZE(known); r++)
		if (p->replica[r])
			known[nk++] = r;
	if (!nk)
		return;
	size_t rec = known[gen_below(&R, nk)];
	merge_rec_t *mine = p->replica[rec];
	uint64_t hlc = hlc_tick(&p->clock, wall);
	Shahidi__V1__Change *c = arena_zalloc(A, sizeof(*c));
	shahidi__v1__change__init(c);
	c->change_id = p->next_change++;
	c->record_id = (ProtobufCBinaryData){16, records[rec]};
	c->form_id = "incident_report";
	c->form_version = 1;
	c->hlc = hlc;
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
		fw->value = clear ? NULL : gen_value(&R, A, fd, hlc_ms(hlc));
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
	if (gen_below(&R, 8) == 0) {
		/* delete, or undo a deletion */
		Shahidi__V1__Deletion *d = arena_zalloc(A, sizeof(*d));
		shahidi__v1__deletion__init(d);
		d->deleted = !merge_is_deleted(mine);
		base_of(merge_register(mine, MERGE_DELETION_FIELD), (struct merge_stamp **)&w[n_w].base,
			&d->supersedes, &d->n_supersedes);
		w[n_w].n_base = d->n_supersedes;
		w[n_w].field = MERGE_DELETION_FIELD;
		w[n_w].hlc = hlc;
		w[n_w].value = merge_deletion_value(d->deleted, &w[n_w].value_len);
		c->deletion = d;
		n_w++;
	}
	add_change(p, c, rec, w, n_w);
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
		int r = sync_apply(t, c->batches[i], sh_now_ms(), &res);
		if (r < 0)
			return r;
		c->rejected += res.rejected;
	}
	return 0;
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

	/* the order: a shuffle of every change, a fifth of them twice */
	size_t n = 0, cap = n_changes * 2;
	size_t *seq = malloc(cap * sizeof(*seq));
	for (size_t i = 0; i < n_changes; i++) {
		seq[n++] = i;
		if (gen_below(&R, 5) == 0)
			seq[n++] = i;
	}
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = gen_below(&R, i + 1), x = seq[i];
		seq[i] = seq[j];
		seq[j] = x;
	}
	uint64_t batch_seq[N_DEV] = {0};
	struct run_ctx ctx = {.batches = calloc(n, sizeof(*ctx.batches))};
	struct buf body = {0};
	struct sync_limits lim;
	sync_limits_default(&lim);
	for (size_t i = 0; i < n;) {
		uint64_t dev = changes[seq[i]].device;
		int di = (int)((dev - 0x1000) / 0x10001);
		size_t max = 1 + gen_below(&R, 50);
		buf_reset(&body);
		codec_pb_put_fixed64(&body, 1, dev);
		codec_pb_put_uint(&body, 2, ++batch_seq[di]);
		size_t k = 0;
		while (i < n && k < max && changes[seq[i]].device == dev) {
			codec_pb_put_bytes(&body, 6, changes[seq[i]].bytes, changes[seq[i]].len);
			i++;
			k++;
		}
		struct form_verdict v;
		CHECK(sync_decode(forms, &lim, body.data, body.len, CODEC_IDENTITY, sh_now_ms(),
				  &ctx.batches[ctx.n++], &v) == 0);
	}
	CHECK(store_write(s, apply_all, &ctx) == 0);
	CHECK_EQ_INT(ctx.rejected, 0);

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
	form_registry_free(forms);
	arena_free(A);
	return 0;
}
