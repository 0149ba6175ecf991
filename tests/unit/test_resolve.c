/* Resolving conflicts at the office (resolve_apply), through a real store:
 * a resolution keeps the chosen value or writes a new one, supersedes
 * every live value so the conflict is gone, goes into the log as the
 * acting device's change; a deletion conflict is settled either way; each
 * refusal says why and changes nothing. */
#include <errno.h>

#include "check.h"
#include "common.h"
#include "hlc.h"
#include "merge.h"
#include "resolve.h"
#include "store.h"
#include "testutil.h"

static struct store *S;
static struct form_registry *FORMS;
static struct arena *A;
static uint64_t A_DEV, B_DEV, COORD;

enum { F_RISK = 140, F_CASEWORKER = 142 };

static merge_rec_t *record(const uint8_t rid[16])
{
	struct store_txn *t;
	merge_rec_t *rec;
	CHECK_EQ_INT(store_begin(S, false, &t), 0);
	CHECK_EQ_INT(store_record_get(t, A, rid, &rec), 0);
	store_abort(t);
	return rec; /* in A, which outlives the transaction */
}

/* resolve_apply in its own write transaction, committed on success. */
static int resolve(const struct resolve_req *q, struct form_verdict *v, uint64_t *ret_log_seq)
{
	struct store_txn *t;
	CHECK_EQ_INT(store_begin(S, true, &t), 0);
	memset(v, 0, sizeof(*v));
	int r = resolve_apply(t, FORMS, COORD, q, sh_now_ms(), v, ret_log_seq);
	if (r == 0)
		CHECK_EQ_INT(store_commit(t), 0);
	else
		store_abort(t);
	return r;
}

/* A report by phone a that phone b may edit too, and the two phones'
 * concurrent risk levels (neither saw the other's). */
static const uint8_t *conflicted(uint64_t seed, uint64_t *a_seq, uint64_t *b_seq)
{
	uint64_t hlc = tu_now_hlc();
	Shahidi__V1__Change *c = tu_report(A, FORMS, seed, ++*a_seq, hlc);
	tu_push1(S, FORMS, A_DEV, *a_seq, c);
	const uint8_t *rid = c->record_id.data;
	tu_assign(S, rid, B_DEV);
	Shahidi__V1__Change *ea = tu_change(A, rid, ++*a_seq, hlc + 10);
	tu_set(A, ea, F_RISK, tu_choice(A, "urgent"), 0, NULL);
	tu_push1(S, FORMS, A_DEV, *a_seq, ea);
	Shahidi__V1__Change *eb = tu_change(A, rid, ++*b_seq, hlc + 20);
	tu_set(A, eb, F_RISK, tu_choice(A, "low"), 0, NULL);
	tu_push1(S, FORMS, B_DEV, *b_seq, eb);
	merge_rec_t *rec = record(rid);
	CHECK(merge_in_conflict(merge_register(rec, F_RISK)));
	CHECK_EQ_INT(rec->conflicts, 1);
	return rid;
}

static const char *code_of(const merge_entry_t *e, char out[32])
{
	struct form_value fv;
	CHECK(e && form_value_parse(e->value.data, e->value.len, &fv) == 0);
	CHECK(fv.kind == FT_CHOICE && fv.str_len < 32);
	memcpy(out, fv.str, fv.str_len);
	out[fv.str_len] = 0;
	return out;
}

int main(void)
{
	char dir[256], code[32];
	tu_tmpdir(dir);
	S = tu_store_open(dir, NULL);
	FORMS = tu_forms(false);
	A = arena_new();
	A_DEV = tu_enrol(S, "phone a", "047", ROLE_DEVICE, NULL);
	B_DEV = tu_enrol(S, "phone b", "047", ROLE_DEVICE, NULL);
	COORD = tu_enrol(S, "coordinator", "047", ROLE_COORDINATOR, NULL);
	uint64_t a_seq = 0, b_seq = 0, log_seq;
	struct form_verdict v;
	struct tu_state before, after;

	fprintf(stderr, "-- take one phone's value: the conflict is gone, the log says who\n");
	const uint8_t *r1 = conflicted(1, &a_seq, &b_seq);
	struct resolve_req q = {.record_id = r1, .field = F_RISK, .how = RESOLVE_TAKE,
				.take_device = A_DEV};
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), 0);
	merge_rec_t *rec = record(r1);
	const merge_reg_t *reg = merge_register(rec, F_RISK);
	CHECK_EQ_INT(merge_live_count(reg), 1);
	CHECK_EQ_STR(code_of(merge_current(reg), code), "urgent");
	CHECK_EQ_INT(merge_current(reg)->device, COORD);
	CHECK_EQ_INT(rec->conflicts, 0);
	struct store_txn *t;
	store_log_t *le;
	CHECK_EQ_INT(store_begin(S, false, &t), 0);
	CHECK_EQ_INT(store_log_get(t, A, log_seq, &le), 0);
	CHECK_EQ_INT(le->device, COORD);
	store_abort(t);

	fprintf(stderr, "-- refusals say why and change nothing\n");
	tu_state(S, &before);
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), -EINVAL); /* settled already */
	CHECK_EQ_STR(v.code, "no_conflict");
	const uint8_t *r2 = conflicted(2, &a_seq, &b_seq);
	tu_state(S, &before);
	q.record_id = r2;
	q.take_device = COORD; /* wrote nothing there */
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), -EINVAL);
	CHECK_EQ_STR(v.code, "no_such_value");
	q.field = F_CASEWORKER; /* not in conflict */
	q.take_device = A_DEV;
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), -EINVAL);
	CHECK_EQ_STR(v.code, "no_conflict");
	q.field = MERGE_DELETION_FIELD;
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), -EINVAL);
	CHECK_EQ_STR(v.code, "bad_field");
	q.field = F_RISK;
	q.how = RESOLVE_VALUE;
	Shahidi__V1__Value *bad = tu_choice(A, "apocalyptic"); /* not in the vocabulary */
	uint8_t vb[64];
	q.value = vb;
	q.value_len = shahidi__v1__value__pack(bad, vb);
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), -EINVAL);
	CHECK(v.code[0] && strcmp(v.code, "no_conflict"));
	uint8_t unknown[16] = {0x42};
	struct resolve_req q2 = q;
	q2.record_id = unknown;
	CHECK_EQ_INT(resolve(&q2, &v, &log_seq), -ENOENT);
	tu_state(S, &after);
	CHECK(tu_state_eq(&before, &after));

	fprintf(stderr, "-- type another value: it replaces both\n");
	Shahidi__V1__Value *medium = tu_choice(A, "medium");
	q.value_len = shahidi__v1__value__pack(medium, vb);
	CHECK_EQ_INT(resolve(&q, &v, &log_seq), 0);
	rec = record(r2);
	reg = merge_register(rec, F_RISK);
	CHECK_EQ_INT(merge_live_count(reg), 1);
	CHECK_EQ_STR(code_of(merge_current(reg), code), "medium");
	CHECK_EQ_INT(rec->conflicts, 0);

	fprintf(stderr, "-- a deletion that had not seen an edit: kept, or deleted\n");
	for (int keep = 0; keep < 2; keep++) {
		uint64_t hlc = tu_now_hlc();
		Shahidi__V1__Change *c = tu_report(A, FORMS, 10 + (uint64_t)keep, ++a_seq, hlc);
		tu_push1(S, FORMS, A_DEV, a_seq, c);
		const uint8_t *rid = c->record_id.data;
		tu_assign(S, rid, B_DEV);
		/* b saw the report (its caseworker, if it had one) */
		uint64_t saw[2] = {hlc, A_DEV};
		Shahidi__V1__Change *eb = tu_change(A, rid, ++b_seq, hlc + 10);
		tu_set(A, eb, F_CASEWORKER, tu_text(A, "Otieno"), 1, saw);
		tu_push1(S, FORMS, B_DEV, b_seq, eb);
		Shahidi__V1__Change *del = tu_change(A, rid, ++a_seq, hlc + 20);
		tu_delete(A, del, true, 0, NULL); /* saw nothing of b's edit */
		tu_push1(S, FORMS, A_DEV, a_seq, del);
		rec = record(rid);
		CHECK(merge_is_deleted(rec) && rec->delete_conflict);
		struct resolve_req qd = {.record_id = rid, .how = RESOLVE_DELETED,
					 .deleted = !keep};
		CHECK_EQ_INT(resolve(&qd, &v, &log_seq), 0);
		rec = record(rid);
		CHECK_EQ_INT(merge_is_deleted(rec), !keep);
		CHECK(!rec->delete_conflict);
		CHECK_EQ_INT(rec->conflicts, 0);
		CHECK_EQ_INT(resolve(&qd, &v, &log_seq), -EINVAL);
		CHECK_EQ_STR(v.code, "no_conflict");
	}

	arena_free(A);
	store_close(S);
	form_registry_free(FORMS);
	tu_rmrf(dir);
	return 0;
}
