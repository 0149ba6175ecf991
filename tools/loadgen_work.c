/* loadgen_work: the simulated phones' offline edits, made from the seed.
 *
 * Each device has its own random stream (the seed mixed with its index), so
 * its changes do not depend on how many other devices there are. Content
 * comes from gen.h (the form's vocabularies, narratives of 500-800 bytes,
 * version 7 record ids). Stamps and record ids take the wall clock, so two
 * runs never make the same ids; everything else repeats with the seed.
 *
 * Every edit names as its base what the phone last saw of the field, as a
 * real app does: its own last write, or for a shared record it has not
 * edited yet, the create's stamp. Two devices editing the same shared field
 * from the create therefore conflict, which is what verification expects.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "codec.h"
#include "common.h"
#include "gen.h"
#include "loadgen.h"
#include "shahidi.pb-c.h"
#include "store.h"

#define APP_VERSION "shahidi-loadgen " SHAHIDI_VERSION
#define LG_MAX_THREADS 16

static uint64_t device_seed(uint64_t seed, unsigned idx)
{
	struct gen_rng r = {seed ^ ((uint64_t)idx * 0x9e3779b97f4a7c15ull)};
	gen_next(&r);
	return gen_next(&r);
}

/* A base of at most one stamp, allocated in a. */
static Shahidi__V1__Stamp **one_stamp(struct arena *a, uint64_t hlc, uint64_t device,
				      size_t *ret_n)
{
	*ret_n = 0;
	if (!hlc)
		return NULL;
	Shahidi__V1__Stamp **v = arena_alloc(a, sizeof(*v));
	Shahidi__V1__Stamp *s = arena_alloc(a, sizeof(*s));
	if (!v || !s)
		return NULL;
	shahidi__v1__stamp__init(s);
	s->hlc = hlc;
	s->device = device;
	v[0] = s;
	*ret_n = 1;
	return v;
}

static Shahidi__V1__FieldWrite *field_write(struct gen_rng *r, struct arena *a,
					    const struct form *f, uint32_t field, uint64_t base_hlc,
					    uint64_t base_dev, uint64_t now_ms)
{
	const struct form_field *fd = form_field(f, field);
	Shahidi__V1__FieldWrite *fw = arena_alloc(a, sizeof(*fw));
	if (!fd || !fw)
		return NULL;
	shahidi__v1__field_write__init(fw);
	fw->field = field;
	if (!(fw->value = gen_value(r, a, fd, now_ms)))
		return NULL;
	fw->supersedes = one_stamp(a, base_hlc, base_dev, &fw->n_supersedes);
	if (base_hlc && !fw->supersedes)
		return NULL;
	return fw;
}

static Shahidi__V1__Change *change_new(struct arena *a, const struct form *f, uint64_t change_id,
				       const uint8_t *record_id, uint64_t hlc, size_t n_fields)
{
	Shahidi__V1__Change *c = arena_alloc(a, sizeof(*c));
	Shahidi__V1__FieldWrite **fws = arena_alloc(a, (n_fields + 1) * sizeof(*fws));
	if (!c || !fws)
		return NULL;
	shahidi__v1__change__init(c);
	c->change_id = change_id;
	c->record_id = (ProtobufCBinaryData){16, (uint8_t *)record_id};
	c->form_id = (char *)f->form_id;
	c->form_version = f->version;
	c->hlc = hlc;
	c->fields = fws;
	return c;
}

static const Shahidi__V1__FieldWrite *find_field(const Shahidi__V1__Change *c, uint32_t field)
{
	for (size_t i = 0; i < c->n_fields; i++)
		if (c->fields[i]->field == field)
			return c->fields[i];
	return NULL;
}

/* --groups: the first victim of a new report, tracked for later edits. */
static void track_instance(const struct form *f, const Shahidi__V1__Change *c, uint64_t hlc,
			   struct lg_inst *in)
{
	memset(in, 0, sizeof(*in));
	for (size_t i = 0; i < c->n_fields; i++) {
		const Shahidi__V1__FieldWrite *fw = c->fields[i];
		const struct form_field *fd = form_field(f, fw->field);
		if (fw->instance.len != 16 || !fd || !fd->group)
			continue;
		in->made = hlc;
		if (!in->has_src && !strcmp(fd->group->name, "sources")) {
			memcpy(in->src, fw->instance.data, 16);
			in->has_src = true;
		}
		if (strcmp(fd->group->name, "victims"))
			continue;
		if (!in->has) {
			memcpy(in->id, fw->instance.data, 16);
			in->has = true;
		}
		if (!memcmp(in->id, fw->instance.data, 16) && fw->field == LG_FIELD_VICTIM_AGE)
			in->stamp_age = hlc;
	}
}

/* A new report; a shared one always sets the field the others will edit. */
static Shahidi__V1__Change *make_create(struct lg_run *run, struct gen_rng *r,
					struct arena *a, uint64_t change_id, uint64_t hlc,
					uint64_t now_ms, bool shared, struct lg_record *rec,
					struct lg_inst *in)
{
	Shahidi__V1__Change *c = gen_report(r, a, run->form, change_id, hlc, now_ms);
	if (!c)
		return NULL;
	if (shared && !find_field(c, LG_FIELD_RISK)) {
		Shahidi__V1__FieldWrite **fws = arena_alloc(a, (c->n_fields + 1) * sizeof(*fws));
		if (!fws)
			return NULL;
		memcpy(fws, c->fields, c->n_fields * sizeof(*fws));
		if (!(fws[c->n_fields] = field_write(r, a, run->form, LG_FIELD_RISK, 0, 0, now_ms)))
			return NULL;
		c->fields = fws;
		c->n_fields++;
	}
	memcpy(rec->id, c->record_id.data, 16);
	if (in)
		track_instance(run->form, c, hlc, in);
	rec->stamp_risk = find_field(c, LG_FIELD_RISK) ? hlc : 0;
	rec->stamp_caseworker = find_field(c, LG_FIELD_CASEWORKER) ? hlc : 0;
	rec->stamp_del = 0;
	rec->deleted = false;
	return c;
}

static Shahidi__V1__Change *make_edit(struct lg_run *run, struct lg_device *d, struct gen_rng *r,
				      struct arena *a, uint64_t change_id, uint64_t hlc,
				      uint64_t now_ms, struct lg_record *rec, uint8_t *ret_fields)
{
	/* Mostly one field, sometimes both, as a caseworker's follow-up. */
	uint64_t pick = gen_below(r, 10);
	uint8_t which = pick < 5 ? 1 : pick < 9 ? 2 : 3;
	Shahidi__V1__Change *c = change_new(a, run->form, change_id, rec->id, hlc, 2);
	if (!c)
		return NULL;
	if (which & 1) {
		if (!(c->fields[c->n_fields++] = field_write(r, a, run->form, LG_FIELD_RISK,
							     rec->stamp_risk, d->id, now_ms)))
			return NULL;
		rec->stamp_risk = hlc;
	}
	if (which & 2) {
		if (!(c->fields[c->n_fields++] = field_write(r, a, run->form, LG_FIELD_CASEWORKER,
							     rec->stamp_caseworker, d->id, now_ms)))
			return NULL;
		rec->stamp_caseworker = hlc;
	}
	*ret_fields = which;
	return c;
}

static Shahidi__V1__Change *make_shared_edit(struct lg_run *run, struct lg_device *d,
					     struct gen_rng *r, struct arena *a, uint64_t change_id,
					     uint64_t hlc, uint64_t now_ms, uint32_t s)
{
	struct lg_device *owner = &run->dev[0];
	struct lg_record *rec = &owner->recs[s];
	/* The creator saw its create, then its own edits; another device
	 * saw the create (it pulled the record), then its own edits. */
	uint64_t base_hlc = d == owner ? rec->stamp_risk : d->shared_seen[s];
	uint64_t base_dev = d->id;
	if (!base_hlc) {
		base_hlc = run->shared_create_hlc[s];
		base_dev = owner->id;
	}
	Shahidi__V1__Change *c = change_new(a, run->form, change_id, rec->id, hlc, 1);
	if (!c || !(c->fields[0] = field_write(r, a, run->form, LG_FIELD_RISK, base_hlc, base_dev,
					       now_ms)))
		return NULL;
	c->n_fields = 1;
	d->shared_seen[s] = hlc;
	if (d == owner)
		rec->stamp_risk = hlc;
	return c;
}

/* --groups: a new age for the first victim of one of its records, based on
 * its last write of it (or the create's, or nothing). */
static Shahidi__V1__Change *make_inst_edit(struct lg_run *run, struct lg_device *d,
					   struct gen_rng *r, struct arena *a, uint64_t change_id,
					   uint64_t hlc, uint64_t now_ms, struct lg_record *rec,
					   struct lg_inst *in)
{
	Shahidi__V1__Change *c = change_new(a, run->form, change_id, rec->id, hlc, 1);
	Shahidi__V1__FieldWrite *fw;
	if (!c || !(fw = field_write(r, a, run->form, LG_FIELD_VICTIM_AGE, in->stamp_age, d->id,
				     now_ms)))
		return NULL;
	fw->instance = (ProtobufCBinaryData){16, in->id};
	c->fields[c->n_fields++] = fw;
	in->stamp_age = hlc;
	return c;
}

/* --groups: removes the first source of one of its records, having seen
 * every value of it (the create's). */
static Shahidi__V1__Change *make_inst_remove(struct lg_run *run, struct arena *a,
					     uint64_t change_id, uint64_t hlc, uint64_t device,
					     struct lg_record *rec, struct lg_inst *in)
{
	Shahidi__V1__Change *c = change_new(a, run->form, change_id, rec->id, hlc, 1);
	Shahidi__V1__FieldWrite *fw = arena_alloc(a, sizeof(*fw));
	Shahidi__V1__Value *v = arena_alloc(a, sizeof(*v));
	Shahidi__V1__Stamp **seen = arena_alloc(a, 2 * sizeof(*seen));
	Shahidi__V1__Stamp *st = arena_alloc(a, 2 * sizeof(*st));
	if (!c || !fw || !v || !seen || !st)
		return NULL;
	shahidi__v1__field_write__init(fw);
	shahidi__v1__value__init(v);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
	v->boolean = true;
	fw->field = 0;
	fw->value = v;
	fw->instance = (ProtobufCBinaryData){16, in->src};
	shahidi__v1__stamp__init(&st[0]);
	st[0].hlc = in->made;
	st[0].device = device;
	seen[0] = &st[0];
	fw->seen = seen;
	fw->n_seen = 1;
	c->fields[c->n_fields++] = fw;
	in->src_removed = true;
	return c;
}

/* --groups: a perpetrator added to a shared record (a new instance id). */
static Shahidi__V1__Change *make_shared_add(struct lg_run *run, struct gen_rng *r,
					    struct arena *a, uint64_t change_id, uint64_t hlc,
					    uint64_t now_ms, uint32_t s)
{
	struct lg_record *rec = &run->dev[0].recs[s];
	Shahidi__V1__Change *c = change_new(a, run->form, change_id, rec->id, hlc, 2);
	uint8_t *id = arena_alloc(a, 16);
	if (!c || !id)
		return NULL;
	gen_instance_id(r, now_ms, id);
	uint32_t fields[2] = {LG_FIELD_PERP_INST, LG_FIELD_PERP_COUNT};
	for (int i = 0; i < 2; i++) {
		Shahidi__V1__FieldWrite *fw = field_write(r, a, run->form, fields[i], 0, 0, now_ms);
		if (!fw)
			return NULL;
		fw->instance = (ProtobufCBinaryData){16, id};
		c->fields[c->n_fields++] = fw;
	}
	return c;
}

/* Deletes one of its records, or undoes the deletion of one it deleted. */
static Shahidi__V1__Change *make_deletion(struct lg_run *run, struct lg_device *d,
					  struct arena *a, uint64_t change_id, uint64_t hlc,
					  struct lg_record *rec)
{
	Shahidi__V1__Change *c = change_new(a, run->form, change_id, rec->id, hlc, 0);
	Shahidi__V1__Deletion *del = arena_alloc(a, sizeof(*del));
	if (!c || !del)
		return NULL;
	shahidi__v1__deletion__init(del);
	del->deleted = !rec->deleted;
	del->supersedes = one_stamp(a, rec->stamp_del, d->id, &del->n_supersedes);
	if (rec->stamp_del && !del->supersedes)
		return NULL;
	c->deletion = del;
	rec->deleted = !rec->deleted;
	rec->stamp_del = hlc;
	return c;
}

/* One change of kind chosen by the roll; fills *lc. NULL when out of memory. */
static Shahidi__V1__Change *make_change(struct lg_run *run, struct lg_device *d,
					struct gen_rng *r, struct arena *a, uint64_t now,
					struct lg_change *lc)
{
	const struct lg_opts *o = &run->o;
	size_t k = (size_t)(lc - d->changes);
	size_t first_own = d->idx == 0 ? run->n_shared : 0;
	size_t own = d->n_recs - first_own;
	uint64_t change_id = d->first_change_id + k;
	uint64_t hlc = hlc_tick(&d->clock, now);
	uint64_t roll = gen_below(r, 1000);

	if (d->idx == 0 && k < run->n_shared) {
		lc->kind = LG_SHARED_CREATE;
		lc->rec = (uint32_t)d->n_recs;
		run->shared_create_hlc[k] = hlc;
		size_t i = d->n_recs++;
		return make_create(run, r, a, change_id, hlc, now, true, &d->recs[i],
				   d->insts ? &d->insts[i] : NULL);
	}
	if (roll < o->pct_delete && own > 0) {
		lc->rec = (uint32_t)(first_own + gen_below(r, own));
		lc->kind = d->recs[lc->rec].deleted ? LG_UNDELETE : LG_DELETE;
		return make_deletion(run, d, a, change_id, hlc, &d->recs[lc->rec]);
	}
	roll -= SH_MIN(roll, (uint64_t)o->pct_delete);
	if (roll < o->pct_shared && run->n_shared > 0) {
		lc->kind = LG_SHARED_EDIT;
		lc->rec = (uint32_t)gen_below(r, run->n_shared);
		lc->fields = 1;
		return make_shared_edit(run, d, r, a, change_id, hlc, now, lc->rec);
	}
	roll -= SH_MIN(roll, (uint64_t)o->pct_shared);
	if (roll < o->pct_edit && own > 0) {
		lc->kind = LG_EDIT;
		lc->rec = (uint32_t)(first_own + gen_below(r, own));
		return make_edit(run, d, r, a, change_id, hlc, now, &d->recs[lc->rec], &lc->fields);
	}
	roll -= SH_MIN(roll, (uint64_t)o->pct_edit);
	/* --groups; each 0 without it, so the default mix is as before */
	if (roll < o->pct_gedit && own > 0) {
		size_t i = first_own + gen_below(r, own);
		if (d->insts[i].has) {
			lc->kind = LG_INST_EDIT;
			lc->rec = (uint32_t)i;
			return make_inst_edit(run, d, r, a, change_id, hlc, now, &d->recs[i],
					      &d->insts[i]);
		}
		goto create; /* that record has no victim to edit */
	}
	roll -= SH_MIN(roll, (uint64_t)o->pct_gedit);
	if (roll < o->pct_gadd && run->n_shared > 0) {
		lc->kind = LG_SHARED_ADD;
		lc->rec = (uint32_t)gen_below(r, run->n_shared);
		return make_shared_add(run, r, a, change_id, hlc, now, lc->rec);
	}
	roll -= SH_MIN(roll, (uint64_t)o->pct_gadd);
	if (roll < o->pct_gremove && own > 0) {
		size_t i = first_own + gen_below(r, own);
		if (d->insts[i].has_src && !d->insts[i].src_removed && !d->recs[i].deleted) {
			lc->kind = LG_INST_REMOVE;
			lc->rec = (uint32_t)i;
			return make_inst_remove(run, a, change_id, hlc, d->id, &d->recs[i],
						&d->insts[i]);
		}
	}
create:
	lc->kind = LG_CREATE;
	lc->rec = (uint32_t)d->n_recs;
	size_t i = d->n_recs++;
	return make_create(run, r, a, change_id, hlc, now, false, &d->recs[i],
			   d->insts ? &d->insts[i] : NULL);
}

/* The device's next batch, packed and deflated into bt->body. */
static int make_batch(struct lg_run *run, struct lg_device *d, struct gen_rng *r,
		      struct arena *a, struct buf *raw, struct lg_batch *bt)
{
	const struct lg_opts *o = &run->o;
	uint64_t now = sh_now_ms();
	size_t total = (size_t)o->changes;
	int rc;

	arena_reset(a);
	bt->seq = d->first_batch_seq + d->n_batches;
	bt->first = d->n_changes;
	bt->n = (uint32_t)SH_MIN((size_t)o->batch, total - d->n_changes);
	Shahidi__V1__Change **chs = arena_alloc(a, bt->n * sizeof(*chs));
	if (!chs)
		return -ENOMEM;
	for (uint32_t i = 0; i < bt->n; i++) {
		if (!(chs[i] = make_change(run, d, r, a, now, &d->changes[d->n_changes])))
			return -ENOMEM;
		d->n_changes++;
	}

	Shahidi__V1__PushBatch pb = SHAHIDI__V1__PUSH_BATCH__INIT;
	pb.device = d->id;
	pb.batch_seq = bt->seq;
	pb.app_version = APP_VERSION;
	pb.unsent = (uint32_t)SH_MIN(total - d->n_changes, (size_t)UINT32_MAX);
	pb.sent_hlc = hlc_tick(&d->clock, now);
	pb.changes = chs;
	pb.n_changes = bt->n;
	buf_reset(raw);
	if ((rc = buf_reserve(raw, shahidi__v1__push_batch__get_packed_size(&pb))) < 0)
		return rc;
	raw->len = shahidi__v1__push_batch__pack(&pb, raw->data);
	struct buf z = {0};
	if ((rc = codec_deflate(raw->data, raw->len, CODEC_DEFLATE, o->level, &z)) < 0)
		return rc;
	bt->body = z.data; /* the batch owns the buffer from here */
	bt->len = z.len;
	d->raw_bytes += raw->len;
	d->body_bytes += z.len;
	return 0;
}

static int make_device(struct lg_run *run, struct lg_device *d)
{
	const struct lg_opts *o = &run->o;
	struct gen_rng rng = {device_seed(o->seed, d->idx)};
	struct arena *a = arena_new();
	struct buf raw = {0};
	size_t n = (size_t)o->changes;
	size_t nb = (n + o->batch - 1) / o->batch;
	int r = -ENOMEM;

	d->changes = calloc(n + 1, sizeof(*d->changes));
	d->recs = calloc(n + 1, sizeof(*d->recs));
	d->batches = calloc(nb + 1, sizeof(*d->batches));
	d->shared_seen = calloc(run->n_shared + 1, sizeof(*d->shared_seen));
	if (o->groups && !(d->insts = calloc(n + 1, sizeof(*d->insts))))
		goto out;
	if (!a || !d->changes || !d->recs || !d->batches || !d->shared_seen)
		goto out;
	for (r = 0; r == 0 && d->n_batches < nb; d->n_batches += r == 0)
		r = make_batch(run, d, &rng, a, &raw, &d->batches[d->n_batches]);
out:
	buf_free(&raw);
	arena_free(a);
	return r;
}

struct workers {
	struct lg_run *run;
	atomic_uint next; /* next device to make */
	atomic_int err;
};

static void *worker(void *ud)
{
	struct workers *w = ud;
	unsigned i;
	while (!atomic_load(&w->err) && (i = atomic_fetch_add(&w->next, 1)) < w->run->n_dev) {
		int r = make_device(w->run, &w->run->dev[i]);
		if (r < 0)
			atomic_store(&w->err, r);
	}
	return NULL;
}

int lg_work_make(struct lg_run *run)
{
	uint64_t t0 = sh_mono_ns();
	struct workers w = {.run = run};
	pthread_t th[LG_MAX_THREADS];
	unsigned n_th = 0;
	run->n_shared = (unsigned)SH_MIN((uint64_t)run->o.shared,
					 SH_MIN((uint64_t)run->o.batch, run->o.changes));
	run->shared_create_hlc = calloc(run->n_shared + 1, sizeof(*run->shared_create_hlc));
	if (!run->shared_create_hlc)
		return -ENOMEM;
	/* Device 0 first: the others' shared edits name its creates' stamps.
	 * The others only read those, and each has its own random stream, so
	 * they can be made in any order, on any thread. */
	int r = make_device(run, &run->dev[0]);
	if (r < 0)
		return r;
	atomic_init(&w.next, 1);
	atomic_init(&w.err, 0);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = (unsigned)SH_MIN(SH_MAX(cores, 1L), (long)LG_MAX_THREADS);
	while (n_th + 1 < want && pthread_create(&th[n_th], NULL, worker, &w) == 0)
		n_th++;
	worker(&w);
	for (unsigned i = 0; i < n_th; i++)
		pthread_join(th[i], NULL);
	if ((r = atomic_load(&w.err)) < 0)
		return r;
	for (unsigned i = 0; i < run->n_dev; i++) {
		run->total_batches += run->dev[i].n_batches;
		run->st.raw_bytes += run->dev[i].raw_bytes;
		run->st.body_bytes += run->dev[i].body_bytes;
	}
	run->st.gen_ns = sh_mono_ns() - t0;
	return 0;
}

void lg_work_free(struct lg_run *run)
{
	for (unsigned i = 0; run->dev && i < run->n_dev; i++) {
		struct lg_device *d = &run->dev[i];
		for (size_t b = 0; b < d->n_batches; b++)
			free(d->batches[b].body);
		free(d->batches);
		free(d->changes);
		free(d->recs);
		free(d->shared_seen);
		free(d->insts);
		d->insts = NULL;
		d->batches = NULL;
		d->changes = NULL;
		d->recs = NULL;
		d->shared_seen = NULL;
	}
	free(run->shared_create_hlc);
	run->shared_create_hlc = NULL;
}

int lg_assign_txn(struct store_txn *t, void *ud)
{
	struct lg_run *run = ud;
	struct arena *a = arena_new();
	int r = a ? 0 : -ENOMEM;
	for (unsigned i = 1; r == 0 && i < run->n_dev; i++)
		for (unsigned k = 0; r == 0 && k < run->n_shared && k < run->dev[0].n_recs; k++) {
			r = store_assign(t, a, run->dev[0].recs[k].id, run->dev[i].id);
			arena_reset(a);
		}
	arena_free(a);
	return r;
}
