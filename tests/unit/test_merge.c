/* The merge rule, alone: no store, no I/O. */
#include "arena.h"
#include "check.h"
#include "form.h"
#include "merge.h"
#include "recpack.h"
#include "shahidi.pb-c.h"

static struct arena *A;
static const uint8_t RID[16] = {0x01, 0x90, 1, 2, 3, 4, 0x70, 5, 0x80, 6, 7, 8, 9, 10, 11, 12};

enum { DEV_A = 0xa, DEV_B = 0xb, DEV_C = 0xc };

/* An encoded Value{text: s}, in the arena. */
static struct merge_write text_write(uint32_t field, uint64_t hlc, const char *s)
{
	Shahidi__V1__Value v = SHAHIDI__V1__VALUE__INIT;
	v.kind_case = SHAHIDI__V1__VALUE__KIND_TEXT;
	v.text = (char *)s;
	size_t n = shahidi__v1__value__get_packed_size(&v);
	uint8_t *p = arena_alloc(A, n);
	shahidi__v1__value__pack(&v, p);
	return (struct merge_write){.field = field, .hlc = hlc, .value = p, .value_len = n};
}

static struct merge_write del_write(uint64_t hlc, bool deleted)
{
	struct merge_write w = {.field = MERGE_DELETION_FIELD, .hlc = hlc};
	w.value = merge_deletion_value(deleted, &w.value_len);
	return w;
}

static struct merge_stamp *base1(uint64_t hlc, uint64_t dev)
{
	struct merge_stamp *b = arena_alloc(A, sizeof(*b));
	*b = (struct merge_stamp){hlc, dev};
	return b;
}

/* One change of one write; its change id is its stamp, as for a device
 * whose clock is right (apply_seq says otherwise). */
static void apply_seen(merge_rec_t *rec, uint64_t dev, uint64_t seq, struct merge_write w,
		       const struct merge_stamp *seen, size_t n_seen)
{
	struct merge_change c = {.device = dev, .seq = seq, .form_version = 1,
				 .writes = &w, .n_writes = 1, .seen = seen, .n_seen = n_seen};
	CHECK(merge_apply(A, rec, &c) == 0);
}

static void apply_seq(merge_rec_t *rec, uint64_t dev, uint64_t seq, struct merge_write w)
{
	apply_seen(rec, dev, seq, w, NULL, 0);
}

static void apply(merge_rec_t *rec, uint64_t dev, struct merge_write w)
{
	apply_seq(rec, dev, w.hlc, w);
}

static merge_rec_t *fresh(void)
{
	merge_rec_t *rec = merge_rec_new(A, RID, "incident_report");
	CHECK(rec);
	return rec;
}

/* The current text of a field, or "" when none. */
static const char *current(const merge_rec_t *rec, uint32_t field)
{
	const merge_entry_t *e = merge_current(merge_register(rec, field));
	struct form_value v;
	if (!e || form_value_parse(e->value.data, e->value.len, &v) < 0 || v.kind != FT_TEXT)
		return "";
	char *s = arena_alloc(A, v.str_len + 1);
	memcpy(s, v.str, v.str_len);
	s[v.str_len] = 0;
	return s;
}

static void test_last_writer_wins_when_it_saw_the_other(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "first"));
	struct merge_write w = text_write(5, 200, "second");
	w.base = base1(100, DEV_A);
	w.n_base = 1;
	apply(r, DEV_B, w);
	CHECK_EQ_STR(current(r, 5), "second");
	CHECK_EQ_INT(merge_live_count(merge_register(r, 5)), 1);
	CHECK_EQ_INT(r->conflicts, 0);
}

static void test_concurrent_edits_conflict_and_keep_both(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "base"));
	struct merge_write wa = text_write(5, 300, "from A"), wb = text_write(5, 200, "from B");
	wa.base = wb.base = base1(100, DEV_A);
	wa.n_base = wb.n_base = 1;
	apply(r, DEV_A, wa);
	apply(r, DEV_B, wb);
	CHECK_EQ_INT(merge_live_count(merge_register(r, 5)), 2);
	CHECK_EQ_INT(r->conflicts, 1);
	/* the greater stamp is shown, the other is not lost */
	CHECK_EQ_STR(current(r, 5), "from A");

	/* A resolution that saw both values closes the conflict. */
	struct merge_write res = text_write(5, 400, "agreed");
	struct merge_stamp *both = arena_alloc(A, 2 * sizeof(*both));
	both[0] = (struct merge_stamp){300, DEV_A};
	both[1] = (struct merge_stamp){200, DEV_B};
	res.base = both;
	res.n_base = 2;
	apply(r, DEV_C, res);
	CHECK_EQ_INT(merge_live_count(merge_register(r, 5)), 1);
	CHECK_EQ_INT(r->conflicts, 0);
	CHECK_EQ_STR(current(r, 5), "agreed");
}

static void test_equal_hlc_ties_break_by_device(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_B, text_write(5, 100, "b"));
	apply(r, DEV_A, text_write(5, 100, "a"));
	CHECK_EQ_STR(current(r, 5), "b"); /* DEV_B > DEV_A */
	merge_rec_t *r2 = fresh();
	apply(r2, DEV_A, text_write(5, 100, "a"));
	apply(r2, DEV_B, text_write(5, 100, "b"));
	CHECK_EQ_STR(current(r2, 5), "b");
}

static void test_superseded_before_arrival(void)
{
	/* B's edit (which saw A's write) arrives before A's write itself. */
	merge_rec_t *r = fresh();
	struct merge_write wb = text_write(5, 200, "B saw A");
	wb.base = base1(100, DEV_A);
	wb.n_base = 1;
	apply(r, DEV_B, wb);
	apply(r, DEV_A, text_write(5, 100, "A original"));
	CHECK_EQ_INT(merge_live_count(merge_register(r, 5)), 1);
	CHECK_EQ_STR(current(r, 5), "B saw A");

	merge_rec_t *r2 = fresh();
	apply(r2, DEV_A, text_write(5, 100, "A original"));
	apply(r2, DEV_B, wb);
	uint8_t d1[32], d2[32];
	merge_digest(r, d1);
	merge_digest(r2, d2);
	CHECK(!memcmp(d1, d2, 32));
}

static void test_device_later_write_supersedes_its_own(void)
{
	/* A device always saw its own earlier write, even if it names no base
	 * (and even if the later write arrives first). */
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 300, "later"));
	apply(r, DEV_A, text_write(5, 100, "earlier"));
	CHECK_EQ_INT(merge_live_count(merge_register(r, 5)), 1);
	CHECK_EQ_STR(current(r, 5), "later");
}

static void test_different_fields_never_conflict(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "a"));
	apply(r, DEV_B, text_write(6, 100, "b"));
	CHECK_EQ_INT(r->conflicts, 0);
	CHECK_EQ_STR(current(r, 5), "a");
	CHECK_EQ_STR(current(r, 6), "b");
}

static void test_deletion_is_a_register(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "x"));
	CHECK(!merge_is_deleted(r));
	apply(r, DEV_A, del_write(200, true));
	CHECK(merge_is_deleted(r));
	/* undo: a later undelete that saw the deletion */
	struct merge_write u = del_write(300, false);
	u.base = base1(200, DEV_A);
	u.n_base = 1;
	apply(r, DEV_B, u);
	CHECK(!merge_is_deleted(r));
	CHECK_EQ_INT(r->conflicts, 0);
	CHECK_EQ_STR(current(r, 5), "x"); /* nothing was thrown away */
}

static void test_edit_concurrent_with_deletion_is_flagged(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "x"));
	struct merge_write d = del_write(200, true);
	apply_seen(r, DEV_B, 200, d, base1(100, DEV_A), 1); /* B had seen "x" */
	CHECK(!r->delete_conflict);
	/* A edits, not having seen the deletion. */
	struct merge_write e = text_write(5, 250, "edited");
	e.base = base1(100, DEV_A);
	e.n_base = 1;
	apply(r, DEV_A, e);
	CHECK(merge_is_deleted(r));
	CHECK(r->delete_conflict);
	CHECK_EQ_INT(r->conflicts, 1);
	/* A coordinator who saw it all confirms the deletion. */
	struct merge_write c = del_write(400, true);
	c.base = base1(200, DEV_B);
	c.n_base = 1;
	apply_seen(r, DEV_C, 400, c, base1(250, DEV_A), 1);
	CHECK(!r->delete_conflict);
	CHECK_EQ_INT(r->conflicts, 0);

	/* An edit the deletion saw is not flagged... */
	merge_rec_t *r2 = fresh();
	apply(r2, DEV_A, text_write(5, 100, "x"));
	apply_seen(r2, DEV_B, 200, del_write(200, true), base1(100, DEV_A), 1);
	CHECK(!r2->delete_conflict);
	/* ...nor one its own device made before deleting... */
	merge_rec_t *r3 = fresh();
	apply(r3, DEV_A, text_write(5, 100, "x"));
	apply(r3, DEV_A, del_write(200, true));
	CHECK(!r3->delete_conflict);
	/* ...nor one it made after deleting (it knows it deleted), arriving
	 * first or last; another phone's edit of that field after it is */
	for (int order = 0; order < 2; order++) {
		merge_rec_t *r6 = fresh();
		apply(r6, DEV_A, text_write(5, 100, "x"));
		if (order)
			apply(r6, DEV_A, text_write(6, 300, "A after deleting"));
		apply(r6, DEV_A, del_write(200, true));
		if (!order)
			apply(r6, DEV_A, text_write(6, 300, "A after deleting"));
		CHECK(merge_is_deleted(r6));
		CHECK(!r6->delete_conflict);
		struct merge_write bw = text_write(6, 400, "B after it");
		bw.base = base1(300, DEV_A);
		bw.n_base = 1;
		apply(r6, DEV_B, bw);
		CHECK(r6->delete_conflict);
	}
	/* ...but one it did not see is, however old its stamp: B's edit was
	 * made offline before A deleted, and A had not seen it. */
	merge_rec_t *r4 = fresh();
	apply(r4, DEV_A, text_write(5, 100, "x"));
	apply(r4, DEV_B, text_write(6, 150, "B offline"));
	apply_seen(r4, DEV_A, 200, del_write(200, true), base1(100, DEV_A), 1);
	CHECK(merge_is_deleted(r4));
	CHECK(r4->delete_conflict);
	CHECK_EQ_INT(r4->conflicts, 1);
	/* the same when the edit comes after the deletion with a slow clock */
	merge_rec_t *r5 = fresh();
	apply(r5, DEV_A, text_write(5, 100, "x"));
	apply_seen(r5, DEV_A, 200, del_write(200, true), base1(100, DEV_A), 1);
	apply_seq(r5, DEV_B, 7, text_write(6, 50, "B, clock behind"));
	CHECK(r5->delete_conflict);
}

static void test_agreeing_deletions_are_no_conflict(void)
{
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "x"));
	apply_seen(r, DEV_A, 200, del_write(200, true), base1(100, DEV_A), 1);
	apply_seen(r, DEV_B, 210, del_write(210, true), base1(100, DEV_A), 1);
	CHECK_EQ_INT(merge_live_count(merge_register(r, 0)), 2);
	CHECK(!merge_in_conflict(merge_register(r, 0)));
	CHECK_EQ_INT(r->conflicts, 0);
	CHECK(merge_is_deleted(r));
	/* a delete and an undelete at once do conflict */
	apply(r, DEV_C, del_write(205, false));
	CHECK(merge_in_conflict(merge_register(r, 0)));
	CHECK_EQ_INT(r->conflicts, 1);
}

static void test_same_stamp_two_values_is_order_independent(void)
{
	merge_rec_t *r1 = fresh(), *r2 = fresh();
	apply(r1, DEV_A, text_write(5, 100, "apple"));
	apply(r1, DEV_A, text_write(5, 100, "pear"));
	apply(r2, DEV_A, text_write(5, 100, "pear"));
	apply(r2, DEV_A, text_write(5, 100, "apple"));
	CHECK_EQ_STR(current(r1, 5), current(r2, 5));
	uint8_t d1[32], d2[32];
	merge_digest(r1, d1);
	merge_digest(r2, d2);
	CHECK(!memcmp(d1, d2, 32));
}

static void test_own_writes_ordered_by_change_id(void)
{
	/* A phone days ahead writes "first" (change 2), then "second" (change
	 * 3, naming the first); its clock was set right in between, so the
	 * second's stamp is lower. Either arrival order keeps "second". */
	const uint64_t ahead = 1000000, right = 500;
	for (int order = 0; order < 2; order++) {
		merge_rec_t *r = fresh();
		struct merge_write w2 = text_write(55, ahead, "first");
		struct merge_write w3 = text_write(55, right, "second");
		w3.base = base1(ahead, DEV_A);
		w3.n_base = 1;
		if (order) {
			apply_seq(r, DEV_A, 3, w3);
			apply_seq(r, DEV_A, 2, w2);
		} else {
			apply_seq(r, DEV_A, 2, w2);
			apply_seq(r, DEV_A, 3, w3);
		}
		CHECK_EQ_STR(current(r, 55), "second");
		CHECK_EQ_INT(r->conflicts, 0);
	}
}

static void test_base_naming_a_future_write_hides_nothing(void)
{
	/* P names a stamp of Q far in the future. Q's real later edits stay
	 * live (a conflict with P's, which had not seen them). */
	merge_rec_t *r = fresh();
	apply(r, DEV_B, text_write(73, 100, "Q's"));
	struct merge_write p = text_write(73, 150, "P's");
	struct merge_stamp *b = arena_alloc(A, 2 * sizeof(*b));
	b[0] = (struct merge_stamp){100, DEV_B};
	b[1] = (struct merge_stamp){100 + 3000000, DEV_B};
	p.base = b;
	p.n_base = 2;
	apply(r, DEV_A, p);
	CHECK_EQ_STR(current(r, 73), "P's");
	CHECK_EQ_INT(merge_register(r, 73)->n_tombstones, 1);
	apply(r, DEV_B, text_write(73, 200, "Q's later"));
	CHECK_EQ_INT(merge_live_count(merge_register(r, 73)), 2);
	CHECK_EQ_INT(r->conflicts, 1);
	CHECK_EQ_STR(current(r, 73), "Q's later");
	/* the write it named, if it ever comes, is dead on arrival */
	apply(r, DEV_B, text_write(73, 100 + 3000000, "named"));
	CHECK_EQ_INT(merge_live_count(merge_register(r, 73)), 1);
	CHECK_EQ_INT(merge_register(r, 73)->n_tombstones, 0);
}

static void test_digest_ignores_order_and_repeats(void)
{
	struct merge_write w[6];
	uint64_t dev[6] = {DEV_A, DEV_B, DEV_A, DEV_C, DEV_B, DEV_C};
	w[0] = text_write(5, 100, "a1");
	w[1] = text_write(5, 110, "b1");
	w[1].base = base1(100, DEV_A);
	w[1].n_base = 1;
	w[2] = text_write(5, 120, "a2");
	w[2].base = base1(100, DEV_A);
	w[2].n_base = 1;
	w[3] = text_write(6, 130, "c1");
	w[4] = del_write(140, true);
	w[5] = text_write(6, 150, "c2");
	uint8_t ref[32];
	for (int perm = 0; perm < 200; perm++) {
		int order[12];
		int n = 0;
		for (int i = 0; i < 6; i++)
			order[n++] = i;
		for (int i = 0; i < (perm % 7); i++)
			order[n++] = (perm + i) % 6; /* repeats */
		uint64_t s = (uint64_t)perm * 2654435761u + 1;
		for (int i = n - 1; i > 0; i--) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			int j = (int)((s >> 33) % (uint64_t)(i + 1));
			int t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
		merge_rec_t *r = fresh();
		for (int i = 0; i < n; i++)
			apply(r, dev[order[i]], w[order[i]]);
		uint8_t d[32];
		merge_digest(r, d);
		if (perm == 0)
			memcpy(ref, d, 32);
		CHECK(!memcmp(ref, d, 32));
		arena_reset(A);
		/* the writes' values live in the arena: make them again */
		w[0] = text_write(5, 100, "a1");
		w[1] = text_write(5, 110, "b1");
		w[1].base = base1(100, DEV_A);
		w[1].n_base = 1;
		w[2] = text_write(5, 120, "a2");
		w[2].base = base1(100, DEV_A);
		w[2].n_base = 1;
		w[3] = text_write(6, 130, "c1");
		w[4] = del_write(140, true);
		w[5] = text_write(6, 150, "c2");
	}
}

/* Packs rec both ways, checks the bytes are the same; returns them. */
static uint8_t *packed_both_ways(const merge_rec_t *rec, size_t *ret_n)
{
	size_t n = protobuf_c_message_get_packed_size(&rec->base);
	uint8_t *ref = arena_alloc(A, n + 1), *ours = arena_alloc(A, n + 1);
	CHECK(protobuf_c_message_pack(&rec->base, ref) == n);
	CHECK_EQ_INT(recpack_size(rec), n);
	CHECK(recpack_pack(rec, ours) == n);
	CHECK(!memcmp(ref, ours, n));
	/* sized once, for the pack after */
	size_t *sizes = arena_alloc(A, recpack_sizes_len(rec) * sizeof(*sizes));
	memset(ours, 0, n);
	CHECK_EQ_INT(recpack_size_keep(rec, sizes), n);
	CHECK(recpack_pack_sized(rec, sizes, ours) == n);
	CHECK(!memcmp(ref, ours, n));
	*ret_n = n;
	return ref;
}

/* recpack gives protobuf-c's bytes and reads them back as protobuf-c does,
 * on records made by random merges (conflicts, deletions and their views,
 * tombstones, cleared values, assignments, pointer records), on
 * records with a field it does not know, and on every truncation. */
static void test_recpack_is_protobuf_c(void)
{
	uint64_t s = 7;
	for (int round = 0; round < 300; round++) {
		merge_rec_t *r = fresh();
		uint64_t devs[4] = {DEV_A, DEV_B, DEV_C, 0x1122334455667788ull};
		int writes = 1 + (int)(s % 40);
		for (int i = 0; i < writes; i++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			uint64_t dev = devs[(s >> 40) % 4], hlc = 1000 + (s >> 50) % 500;
			uint32_t field = (uint32_t)((s >> 20) % 13);
			struct merge_write w;
			if (field == 0) {
				w = del_write(hlc, (s >> 10) & 1);
			} else if ((s >> 12) % 9 == 0) {
				w = (struct merge_write){.field = field, .hlc = hlc}; /* cleared */
			} else {
				char txt[32];
				snprintf(txt, sizeof(txt), "v%llu", (unsigned long long)(s % 100000));
				w = text_write(field, hlc, txt);
			}
			if ((s >> 14) % 5 == 0) {
				w.base = base1(1000 + (s >> 30) % 500, devs[(s >> 16) % 4]);
				w.n_base = 1;
			}
			if ((s >> 18) % 11 == 0) {
				w.base = base1(hlc + 99999, devs[(s >> 16) % 4]); /* a tombstone */
				w.n_base = 1;
			}
			if (field == 0 && (s >> 22) % 2)
				apply_seen(r, dev, hlc, w, base1(hlc - 7, devs[(s >> 24) % 4]), 1);
			else
				apply(r, dev, w);
		}
		if (round % 3 == 0) {
			uint64_t *as = arena_alloc(A, 2 * sizeof(*as));
			as[0] = DEV_B;
			as[1] = s;
			r->assigned = as;
			r->n_assigned = 2;
		}
		r->first_received_ms = s >> 24;
		r->last_changed_ms = round % 4 ? s >> 23 : 0;
		r->changes = (uint64_t)writes;
		r->seq = (uint64_t)round + 1;
		r->log_seq = round % 5 == 0 ? 1u << 20 : 0;
		r->head_log_seq = round % 5 == 1 ? (uint64_t)round << 30 : 0; /* a two-byte tag */
		merge_rec_compact(r);
		size_t n;
		uint8_t *bytes = packed_both_ways(r, &n);

		merge_rec_t *back = recpack_unpack(A, bytes, n);
		CHECK(back);
		size_t n2;
		uint8_t *again = packed_both_ways(back, &n2);
		CHECK(n2 == n && !memcmp(again, bytes, n));
		merge_rec_expand(back);
		merge_rec_expand(r);
		uint8_t d1[32], d2[32];
		merge_digest(r, d1);
		merge_digest(back, d2);
		CHECK(!memcmp(d1, d2, 32));

		/* a field of a newer release survives the round trip */
		uint8_t *more = arena_alloc(A, n + 3);
		memcpy(more, bytes, n);
		more[n] = 0xf0; /* field 30, varint: the tag is a varint too */
		more[n + 1] = 0x01;
		more[n + 2] = 0x05;
		merge_rec_t *newer = recpack_unpack(A, more, n + 3);
		CHECK(newer && newer->base.n_unknown_fields == 1);
		uint8_t *out = arena_alloc(A, n + 3);
		CHECK(recpack_size(newer) == n + 3 && recpack_pack(newer, out) == n + 3);
		CHECK(!memcmp(out, more, n + 3));

		/* truncated: refused exactly when protobuf-c refuses */
		for (size_t cut = 0; cut < n; cut += 1 + n / 40) {
			merge_rec_t *a = recpack_unpack(A, bytes, cut);
			ProtobufCMessage *b = protobuf_c_message_unpack(
				&shahidi__store__v1__record__descriptor, arena_pb_allocator(A), cut, bytes);
			CHECK(!a == !b);
			if (a) {
				size_t na;
				uint8_t *pa = packed_both_ways(a, &na);
				CHECK(na == protobuf_c_message_get_packed_size(b));
				uint8_t *pb2 = arena_alloc(A, na + 1);
				protobuf_c_message_pack(b, pb2);
				CHECK(!memcmp(pa, pb2, na));
			}
		}
		arena_reset(A);
	}
}

/* Repeat groups: writes to instances. */
static struct merge_write in_write(const uint8_t id[16], uint32_t field, uint64_t hlc,
				   const char *text)
{
	struct merge_write w = text_write(field, hlc, text);
	struct merge_inst *in = arena_zalloc(A, sizeof(*in));
	memcpy(in->id, id, 16);
	w.inst = in;
	return w;
}

static struct merge_write in_removal(const uint8_t id[16], uint64_t hlc, bool removed,
				     const struct merge_stamp *seen, size_t n_seen)
{
	struct merge_write w = del_write(hlc, removed);
	struct merge_inst *in = arena_zalloc(A, sizeof(*in));
	memcpy(in->id, id, 16);
	in->seen = seen;
	in->n_seen = n_seen;
	w.inst = in;
	return w;
}

static struct merge_write link_write(const uint8_t id[16], uint32_t field, uint64_t hlc,
				     const uint8_t to[16])
{
	struct merge_write w = {.field = field, .hlc = hlc};
	uint8_t *v = arena_alloc(A, 18);
	v[0] = 0x62; /* Value{link: 16 bytes} */
	v[1] = 16;
	memcpy(v + 2, to, 16);
	w.value = v;
	w.value_len = 18;
	struct merge_inst *in = arena_zalloc(A, sizeof(*in));
	memcpy(in->id, id, 16);
	w.inst = in;
	return w;
}

static const char *current_in(const merge_rec_t *rec, const uint8_t id[16], uint32_t field)
{
	const merge_entry_t *e = merge_current(merge_register_in(rec, id, field));
	struct form_value v;
	if (!e || form_value_parse(e->value.data, e->value.len, &v) < 0 || v.kind != FT_TEXT)
		return "";
	char *s = arena_alloc(A, v.str_len + 1);
	memcpy(s, v.str, v.str_len);
	s[v.str_len] = 0;
	return s;
}

static void test_instances_added_offline_are_all_kept(void)
{
	static const uint8_t p1[16] = {1, 1}, p2[16] = {2, 2};
	merge_rec_t *r = fresh();
	apply(r, DEV_A, text_write(5, 100, "record"));
	/* A and B each add a perpetrator offline: both are kept */
	apply(r, DEV_A, in_write(p1, 222, 200, "Cpl. Otieno"));
	apply(r, DEV_B, in_write(p2, 222, 210, "Sgt. Wafula"));
	CHECK_EQ_STR(current_in(r, p1, 222), "Cpl. Otieno");
	CHECK_EQ_STR(current_in(r, p2, 222), "Sgt. Wafula");
	CHECK_EQ_INT(r->conflicts, 0);
	CHECK(!merge_register(r, 222)); /* the record's own field 222 is another register */
	/* both edit the same perpetrator's identifiers: a conflict on it */
	struct merge_write ea = in_write(p1, 222, 300, "Cpl. J. Otieno"),
			   eb = in_write(p1, 222, 310, "Cpl. Otieno, Kilimani");
	ea.base = eb.base = base1(200, DEV_A);
	ea.n_base = eb.n_base = 1;
	apply(r, DEV_A, ea);
	apply(r, DEV_B, eb);
	CHECK(merge_in_conflict(merge_register_in(r, p1, 222)));
	CHECK_EQ_INT(r->conflicts, 1);
	CHECK_EQ_STR(current_in(r, p2, 222), "Sgt. Wafula");
}

static void test_instance_removal_and_what_it_saw(void)
{
	static const uint8_t v1[16] = {3, 3};
	merge_rec_t *r = fresh();
	apply(r, DEV_A, in_write(v1, 201, 100, "Achieng"));
	/* A removes the victim, having seen its name: removed, nothing flagged */
	apply(r, DEV_A, in_removal(v1, 200, true, base1(100, DEV_A), 1));
	CHECK(merge_instance_removed(r, v1));
	CHECK_EQ_INT(r->conflicts, 0);
	/* B had edited the victim offline, unseen by the removal: flagged */
	apply(r, DEV_B, in_write(v1, 205, 150, "34"));
	CHECK_EQ_INT(merge_instance_flag(r, v1), 1);
	CHECK_EQ_INT(r->conflicts, 1);
	CHECK(!r->delete_conflict); /* the record itself is not deleted */
	/* a removal that saw B's edit too settles it */
	struct merge_stamp *both = arena_alloc(A, 2 * sizeof(*both));
	both[0] = (struct merge_stamp){100, DEV_A};
	both[1] = (struct merge_stamp){150, DEV_B};
	struct merge_write again = in_removal(v1, 300, true, both, 2);
	again.base = base1(200, DEV_A);
	again.n_base = 1;
	apply(r, DEV_C, again);
	CHECK_EQ_INT(merge_instance_flag(r, v1), 0);
	CHECK_EQ_INT(r->conflicts, 0);
}

static void test_link_to_a_removed_instance_is_flagged(void)
{
	static const uint8_t act[16] = {4, 4}, victim[16] = {5, 5};
	merge_rec_t *r = fresh();
	apply(r, DEV_A, in_write(victim, 200, 100, "V-1"));
	apply(r, DEV_A, in_removal(victim, 200, true, base1(100, DEV_A), 1));
	CHECK_EQ_INT(r->conflicts, 0);
	apply(r, DEV_B, link_write(act, 244, 150, victim)); /* B linked an act to it */
	CHECK_EQ_INT(merge_instance_flag(r, victim), 2);
	CHECK_EQ_INT(r->conflicts, 1);
	/* restored: the link stands, no flag */
	struct merge_write back = in_removal(victim, 400, false, NULL, 0);
	back.base = base1(200, DEV_A);
	back.n_base = 1;
	apply(r, DEV_A, back);
	CHECK(!merge_instance_removed(r, victim));
	CHECK_EQ_INT(r->conflicts, 0);
}

static void test_instances_converge_in_any_order(void)
{
	static const uint8_t x[16] = {9}, y[16] = {8};
	uint8_t ref[32];
	for (int order = 0; order < 24; order++) {
		struct merge_write w[5];
		uint64_t dev[5] = {DEV_A, DEV_B, DEV_A, DEV_C, DEV_B};
		w[0] = in_write(x, 201, 100, "a");
		w[1] = in_write(y, 201, 110, "b");
		w[2] = in_removal(x, 200, true, base1(100, DEV_A), 1);
		w[3] = link_write(y, 244, 120, x);
		w[4] = in_write(x, 205, 130, "late edit");
		int idx[5] = {0, 1, 2, 3, 4};
		uint64_t s = (uint64_t)order * 7919 + 1;
		for (int i = 4; i > 0; i--) {
			s = s * 6364136223846793005ull + 1;
			int j = (int)((s >> 33) % (uint64_t)(i + 1)), t = idx[i];
			idx[i] = idx[j];
			idx[j] = t;
		}
		merge_rec_t *r = fresh();
		for (int i = 0; i < 5; i++)
			apply(r, dev[idx[i]], w[idx[i]]);
		uint8_t d[32];
		merge_digest(r, d);
		if (!order)
			memcpy(ref, d, 32);
		CHECK(!memcmp(ref, d, 32));
		CHECK_EQ_INT(r->conflicts, 2); /* x removed: B's late edit unseen, and C's link to it */
		arena_reset(A);
	}
}

int main(void)
{
	A = arena_new();
	RUN(test_last_writer_wins_when_it_saw_the_other);
	RUN(test_concurrent_edits_conflict_and_keep_both);
	RUN(test_equal_hlc_ties_break_by_device);
	RUN(test_superseded_before_arrival);
	RUN(test_device_later_write_supersedes_its_own);
	RUN(test_different_fields_never_conflict);
	RUN(test_deletion_is_a_register);
	RUN(test_edit_concurrent_with_deletion_is_flagged);
	RUN(test_same_stamp_two_values_is_order_independent);
	RUN(test_agreeing_deletions_are_no_conflict);
	RUN(test_own_writes_ordered_by_change_id);
	RUN(test_base_naming_a_future_write_hides_nothing);
	RUN(test_digest_ignores_order_and_repeats);
	RUN(test_recpack_is_protobuf_c);
	RUN(test_instances_added_offline_are_all_kept);
	RUN(test_instance_removal_and_what_it_saw);
	RUN(test_link_to_a_removed_instance_is_flagged);
	RUN(test_instances_converge_in_any_order);
	arena_free(A);
	return 0;
}
