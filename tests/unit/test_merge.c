/* The merge rule, alone: no store, no I/O. */
#include "arena.h"
#include "check.h"
#include "form.h"
#include "merge.h"
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

static void apply(merge_rec_t *rec, uint64_t dev, struct merge_write w)
{
	struct merge_change c = {.device = dev, .form_version = 1,
				 .writes = &w, .n_writes = 1};
	CHECK(merge_apply(A, rec, &c) == 0);
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
	apply(r, DEV_B, d);
	CHECK(!r->delete_conflict);
	/* A edits, not having seen the deletion: its stamp is higher. */
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
	apply(r, DEV_C, c);
	CHECK(!r->delete_conflict);
	CHECK_EQ_INT(r->conflicts, 0);

	/* An edit older than the deletion is not flagged. */
	merge_rec_t *r2 = fresh();
	apply(r2, DEV_A, text_write(5, 100, "x"));
	apply(r2, DEV_B, del_write(200, true));
	CHECK(!r2->delete_conflict);
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

static void test_base_may_name_the_stamp_as_sent(void)
{
	/* A's write was stored under 150 (its clock ran ahead: sent as 900);
	 * B's edit names the stamp A's phone knew: it must still supersede. */
	merge_rec_t *r = fresh();
	struct merge_write w = text_write(5, 150, "A");
	w.orig_hlc = 900;
	apply(r, DEV_A, w);
	struct merge_write e = text_write(5, 200, "B");
	e.base = base1(900, DEV_A);
	e.n_base = 1;
	apply(r, DEV_B, e);
	CHECK_EQ_INT(merge_live_count(merge_register(r, 5)), 1);
	CHECK_EQ_STR(current(r, 5), "B");
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
	RUN(test_base_may_name_the_stamp_as_sent);
	RUN(test_digest_ignores_order_and_repeats);
	arena_free(A);
	return 0;
}
