/* Fuzz target: a sequence of writes into the merge, read from the input.
 * Invariants checked on every input:
 *   - convergence: the same writes applied in another order, with some
 *     repeated, give a byte-identical digest;
 *   - no lost change: every write is either live or superseded (a later
 *     change of its device, or a base that names it, is known);
 * Stamps are adversarial: one device's clock runs near 2^63, one near 0,
 * stamps tie, bases name writes that never come, deletions carry views. 
 *   - conflicts consistent: the record's counter matches its registers;
 *   - the store's record codec (recpack) packs the merged record to
 *     protobuf-c's bytes and reads them back to the same digest, and reads
 *     the raw input, taken as a stored record, exactly as protobuf-c does
 *     (both refuse it, or both read what packs to the same bytes). */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "merge.h"
#include "recpack.h"

#define MAX_W 48

struct w {
	struct merge_write mw;
	struct merge_inst inst;
	struct merge_stamp base[4];
	struct merge_stamp seen[3];
	size_t n_seen;
	uint64_t device, seq;
	uint8_t value[4];
};

static void apply_all(struct arena *a, merge_rec_t *rec, struct w *ws, const int *order, int n)
{
	for (int i = 0; i < n; i++) {
		struct w *x = &ws[order[i]];
		struct merge_change c = {.device = x->device, .seq = x->seq, .form_version = 1,
					 .writes = &x->mw, .n_writes = 1, .seen = x->seen,
					 .n_seen = x->n_seen};
		if (merge_apply(a, rec, &c) < 0)
			abort();
	}
}

/* recpack's bytes for rec (compacted in place); abort when they are not
 * protobuf-c's. */
static uint8_t *packed(struct arena *a, merge_rec_t *rec, size_t *ret_n)
{
	size_t n = protobuf_c_message_get_packed_size(&rec->base);
	uint8_t *ref = arena_alloc(a, n + 1), *ours = arena_alloc(a, n + 1);
	protobuf_c_message_pack(&rec->base, ref);
	if (recpack_size(rec) != n || recpack_pack(rec, ours) != n || memcmp(ref, ours, n))
		abort();
	*ret_n = n;
	return ours;
}

static void check_codec(struct arena *a, merge_rec_t *rec, const uint8_t *raw, size_t raw_n)
{
	uint8_t d1[32], d2[32];
	merge_digest(rec, d1);
	merge_rec_compact(rec);
	size_t n;
	uint8_t *bytes = packed(a, rec, &n);
	merge_rec_t *back = recpack_unpack(a, bytes, n);
	if (!back)
		abort();
	merge_rec_expand(back);
	merge_digest(back, d2);
	if (memcmp(d1, d2, 32))
		abort();

	merge_rec_t *ours = recpack_unpack(a, raw, raw_n);
	ProtobufCMessage *theirs = protobuf_c_message_unpack(
		&shahidi__store__v1__record__descriptor, arena_pb_allocator(a), raw_n, raw);
	if (!ours != !theirs)
		abort();
	if (ours) {
		size_t n1, n2 = protobuf_c_message_get_packed_size(theirs);
		uint8_t *p1 = packed(a, ours, &n1), *p2 = arena_alloc(a, n2 + 1);
		protobuf_c_message_pack(theirs, p2);
		if (n1 != n2 || memcmp(p1, p2, n1))
			abort();
	}
}

static void check(const merge_rec_t *rec, struct w *ws, int n)
{
	uint32_t conflicts = 0;
	bool removed = false;
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		conflicts += merge_in_conflict(g);
		removed |= merge_reg_in_instance(g) && merge_instance_removed(rec, g->instance.data);
	}
	/* every register in conflict counts, and the record's deletion flag;
	 * a removed instance may add its own flags (edits its removal had not
	 * seen, links to it): property.converge counts those exactly */
	if (conflicts + rec->delete_conflict > rec->conflicts ||
	    (!removed && conflicts + rec->delete_conflict != rec->conflicts))
		abort();
	for (int i = 0; i < n; i++) {
		const merge_reg_t *reg = merge_register_in(rec, ws[i].mw.inst ? ws[i].mw.inst->id : NULL,
							  ws[i].mw.field);
		const merge_entry_t *e = NULL;
		for (size_t k = 0; reg && k < reg->n_entries; k++)
			if (reg->entries[k]->device == ws[i].device)
				e = reg->entries[k];
		/* its device's entry holds it or a later change */
		if (!e || e->seq < ws[i].seq || e->pending)
			abort();
		/* a live entry's stamp no base names */
		for (int k = 0; k < n && !e->dead; k++)
			for (size_t b = 0; b < ws[k].mw.n_base; b++)
				if (ws[k].mw.field == reg->field && !ws[k].mw.inst == !ws[i].mw.inst &&
				    (!ws[k].mw.inst || ws[k].mw.inst->id[0] == ws[i].mw.inst->id[0]) &&
				    ws[k].mw.base[b].hlc == e->hlc &&
				    ws[k].mw.base[b].device == e->device)
					abort();
	}
}

/* Value{link: instance 1 or 2} */
static const uint8_t link1[18] = {0x62, 16, 1, [17] = 0x5a}, link2[18] = {0x62, 16, 2, [17] = 0x5a};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t rid[16] = {1};
	struct w ws[MAX_W];
	int n = 0;
	/* Each device's clock: its stamps grow with its changes (any HLC's
	 * do), from wherever the clock stands: far ahead, near 0, right. */
	uint64_t clock[5] = {0, 1000, 1000, 1, (uint64_t)1 << 63}, seq[5] = {0};
	/* 6 bytes per write: device, field, hlc step, value, base mask, deleted */
	for (size_t p = 0; p + 6 <= size && n < MAX_W; p += 6, n++) {
		struct w *x = &ws[n];
		memset(x, 0, sizeof(*x));
		x->device = 1 + data[p] % 4;
		x->seq = ++seq[x->device];
		uint32_t field = data[p + 1] % 4; /* 0: the deletion register */
		x->mw.field = field;
		/* the record's own register, or one of two instances' (field 0:
		 * the instance's removal) */
		unsigned in = (data[p + 1] >> 2) % 3;
		if (in) {
			x->inst.id[0] = (uint8_t)in;
			x->inst.id[15] = 0x5a;
			x->mw.inst = &x->inst;
		}
		clock[x->device] += data[p + 2] % 8; /* 0: a tie with its last */
		x->mw.hlc = clock[x->device];
		if (field == 0) {
			x->mw.value = merge_deletion_value(data[p + 5] & 1, &x->mw.value_len);
		} else {
			x->value[0] = 0x0a; /* Value{text: 2 bytes} */
			x->value[1] = 2;
			x->value[2] = data[p + 3];
			x->value[3] = data[p + 5];
			x->mw.value = x->value;
			x->mw.value_len = 4;
		}
		/* bases name earlier writes of the same register... */
		int m = 0;
		for (int k = 0; k < n && m < 3; k++)
			if ((data[p + 4] >> (k % 8)) & 1 && ws[k].mw.field == field &&
			    !ws[k].mw.inst == !x->mw.inst &&
			    (!x->mw.inst || ws[k].inst.id[0] == x->inst.id[0]))
				x->base[m++] = (struct merge_stamp){ws[k].mw.hlc, ws[k].device};
		/* ...and now and then a write that never comes */
		if ((data[p + 3] & 0xc0) == 0xc0)
			x->base[m++] = (struct merge_stamp){clock[1 + data[p + 3] % 4] + 1 + data[p + 5],
							    1 + (uint64_t)data[p + 3] % 4};
		x->mw.n_base = (size_t)m;
		x->mw.base = x->base;
		/* a deletion's view: some earlier writes of any field */
		for (int k = 0; field == 0 && k < n && x->n_seen < 3; k++)
			if ((data[p + 3] >> (k % 8)) & 1)
				x->seen[x->n_seen++] = (struct merge_stamp){ws[k].mw.hlc, ws[k].device};
		if (x->mw.inst) { /* an instance's removal carries its own view */
			x->inst.seen = x->seen;
			x->inst.n_seen = x->n_seen;
			x->n_seen = 0;
		}
		/* now and then a link, to instance 1 or 2 */
		if (field == 3 && (data[p + 5] & 0x30) == 0x30) {
			x->mw.value = (data[p + 5] & 1) ? link1 : link2;
			x->mw.value_len = 18;
		}
	}
	if (!n)
		return 0;

	struct arena *a = arena_new();
	int fwd[MAX_W], mixed[MAX_W * 2], nm = 0;
	for (int i = 0; i < n; i++)
		fwd[i] = i;
	/* another order: reversed, then every third one again */
	for (int i = n - 1; i >= 0; i--)
		mixed[nm++] = i;
	for (int i = 0; i < n; i += 3)
		mixed[nm++] = i;
	merge_rec_t *r1 = merge_rec_new(a, rid, "f"), *r2 = merge_rec_new(a, rid, "f");
	apply_all(a, r1, ws, fwd, n);
	apply_all(a, r2, ws, mixed, nm);
	uint8_t d1[32], d2[32];
	merge_digest(r1, d1);
	merge_digest(r2, d2);
	if (memcmp(d1, d2, 32))
		abort(); /* not convergent */
	check(r1, ws, n);
	check(r2, ws, n);
	check_codec(a, r1, data, size);
	arena_free(a);
	return 0;
}
