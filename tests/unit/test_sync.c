/* Bad input through the real decode and apply path: each refusal, what it
 * looks like, and that it changes nothing that was stored. */
#include "check.h"
#include "common.h"
#include "gen.h"
#include "hlc.h"
#include "testutil.h"

static struct form_registry *FORMS, *FORMS_V2;
static struct store *S;
static uint64_t DEV, DEV2;
static uint64_t batch_seq;
static char DIR_[256];

/* A batch-level refusal: sync_decode fails with err and code, and the
 * store is unchanged. */
static void refused(const struct buf *body, int err, const char *code)
{
	struct tu_state before, after;
	struct form_verdict v;
	tu_state(S, &before);
	CHECK_EQ_INT(tu_push(S, FORMS, body, NULL, &v), err);
	if (code)
		CHECK_EQ_STR(v.code, code);
	CHECK(v.reason[0]);
	tu_state(S, &after);
	CHECK(tu_state_eq(&before, &after));
}

/* A change-level refusal: the batch goes through, the change is rejected
 * with code, nothing of it is stored. */
static void rejected(Shahidi__V1__Change *c, const char *code)
{
	struct tu_state before, after;
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	tu_state(S, &before);
	tu_batch(&body, DEV, ++batch_seq, &c, 1, CODEC_DEFLATE);
	CHECK_EQ_INT(tu_push(S, FORMS, &body, &resp, NULL), 0);
	CHECK_EQ_INT(resp->n_results, 1);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED);
	if (strcmp(resp->results[0]->code, code))
		fprintf(stderr, "got %s: %s\n", resp->results[0]->code, resp->results[0]->reason);
	CHECK_EQ_STR(resp->results[0]->code, code);
	CHECK(strlen(resp->results[0]->reason) > 10);
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	tu_state(S, &after);
	CHECK(tu_state_eq(&before, &after));
	buf_free(&body);
}

/* A change rejected with code, its reason naming `names`. */
static void rejected_naming_in(const struct form_registry *forms, Shahidi__V1__Change *c,
			       const char *code, const char *names)
{
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	tu_batch(&body, DEV, ++batch_seq, &c, 1, CODEC_DEFLATE);
	CHECK_EQ_INT(tu_push(S, forms, &body, &resp, NULL), 0);
	CHECK_EQ_INT(resp->n_results, 1);
	CHECK_EQ_STR(resp->results[0]->code, code);
	if (!strstr(resp->results[0]->reason, names))
		fprintf(stderr, "%s does not name %s\n", resp->results[0]->reason, names);
	CHECK(strstr(resp->results[0]->reason, names));
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	buf_free(&body);
}

static void rejected_naming(Shahidi__V1__Change *c, const char *code, const char *names)
{
	rejected_naming_in(FORMS, c, code, names);
}

/* A new record without a required field is refused naming it; without
 * several, naming the first in the form's order. */
static void test_required_missing_names_the_first(void)
{
	struct arena *a = arena_new();
	const struct form *f = form_registry_find(FORMS, "incident_report", 1);
	CHECK(f);
	const struct form_field *first = NULL;
	size_t n = 0;
	for (size_t i = 0; i < f->n_fields; i++) {
		const struct form_field *fd = &f->fields[i];
		if (!fd->required)
			continue;
		char names[64];
		for (int both = 0; both < 2; both++) {
			if (both && !first)
				continue;
			arena_reset(a);
			Shahidi__V1__Change *c = tu_report(a, FORMS, 100 + i, 100 + i, tu_now_hlc());
			size_t k = 0;
			for (size_t j = 0; j < c->n_fields; j++)
				if (c->fields[j]->field != fd->number &&
				    !(both && c->fields[j]->field == first->number))
					c->fields[k++] = c->fields[j];
			CHECK(k < c->n_fields);
			c->n_fields = k;
			const struct form_field *named = both ? first : fd;
			snprintf(names, sizeof(names), "field %u (%s)", named->number, named->name);
			rejected_naming(c, "required_missing", names);
		}
		if (!first)
			first = fd;
		n++;
	}
	CHECK(n >= 5);

	/* a form of 70 fields, required the 2nd and the 68th: past the first
	 * 64 fields too */
	struct form_registry *wide;
	char json[8192], err[256];
	size_t o = (size_t)snprintf(json, sizeof(json), "{\"form_id\": \"wide\", \"version\": 1, "
				    "\"fields\": [");
	for (unsigned i = 1; i <= 70; i++)
		o += (size_t)snprintf(json + o, sizeof(json) - o,
				      "%s{\"number\": %u, \"name\": \"f%u\", \"type\": \"text\"%s}",
				      i > 1 ? ", " : "", i, i,
				      i == 2 || i == 68 ? ", \"required\": true" : "");
	snprintf(json + o, sizeof(json) - o, "]}");
	CHECK(form_registry_new(&wide) == 0);
	CHECK(form_registry_add_json(wide, json, strlen(json), "wide", err, sizeof(err)) == 0);
	for (int drop2 = 0; drop2 < 2; drop2++) {
		arena_reset(a);
		uint8_t rid[16];
		memset(rid, 0x40 + drop2, 16);
		Shahidi__V1__Change *c = tu_change(a, rid, 5000 + (uint64_t)drop2, tu_now_hlc());
		c->form_id = "wide";
		c->form_version = 1;
		c->create = true;
		for (unsigned i = 1; i <= 70; i++)
			if (i != 68 && (i != 2 || !drop2))
				tu_set(a, c, i, tu_text(a, "x"), 0, NULL);
		rejected_naming_in(wide, c, "required_missing",
				   drop2 ? "field 2 (f2)" : "field 68 (f68)");
	}
	form_registry_free(wide);
	arena_free(a);
}

static void test_undecodable_batches(void)
{
	struct arena *a = arena_new();
	Shahidi__V1__Change *c = tu_report(a, FORMS, 1, 1, tu_now_hlc());
	struct buf good = {0}, body = {0};
	tu_batch(&good, DEV, 1, &c, 1, CODEC_DEFLATE);

	/* truncated compressed data */
	buf_append(&body, good.data, good.len / 2);
	refused(&body, -EPROTO, "bad_compression");
	/* garbage that is neither compressed nor protobuf */
	buf_reset(&body);
	for (int i = 0; i < 200; i++)
		buf_putc(&body, (char)(0xff - i));
	refused(&body, -EPROTO, "malformed_batch");
	/* a protobuf batch cut in the middle of a change */
	tu_batch(&good, DEV, 1, &c, 1, CODEC_IDENTITY);
	buf_reset(&body);
	buf_append(&body, good.data, good.len - 7);
	refused(&body, -EPROTO, "malformed_batch");
	/* no device, no batch number */
	tu_batch(&body, 0, 1, &c, 1, CODEC_DEFLATE);
	refused(&body, -EINVAL, "bad_batch");
	tu_batch(&body, DEV, 0, &c, 1, CODEC_DEFLATE);
	refused(&body, -EINVAL, "bad_batch");
	buf_free(&good);
	buf_free(&body);
	arena_free(a);
}

static void test_limits(void)
{
	/* A batch that inflates past the limit is refused before its memory
	 * is spent. 40 MiB of zeros compress to ~40 KiB. */
	struct buf zeros = {0}, body = {0};
	CHECK(buf_reserve(&zeros, 40u << 20) == 0);
	memset(zeros.data, 0, 40u << 20);
	zeros.len = 40u << 20;
	CHECK(codec_deflate(zeros.data, zeros.len, CODEC_GZIP, 9, &body) == 0);
	CHECK(body.len < 100000);
	refused(&body, -EMSGSIZE, "body_too_large");
	buf_free(&zeros);

	/* More changes than allowed in one batch. */
	struct arena *a = arena_new();
	size_t n = 5001;
	Shahidi__V1__Change **ch = arena_alloc(a, n * sizeof(*ch));
	Shahidi__V1__Change *one = tu_change(a, (const uint8_t *)"0123456789abcdef", 1, 1);
	tu_set(a, one, 142, tu_text(a, "x"), 0, NULL);
	for (size_t i = 0; i < n; i++)
		ch[i] = one;
	tu_batch(&body, DEV, 1, ch, n, CODEC_DEFLATE);
	refused(&body, -EMSGSIZE, "too_many_changes");
	buf_free(&body);
	arena_free(a);
}

static uint8_t rid_n;

/* A change to an existing record: the report of seed 1 (made in main). */
static Shahidi__V1__Change *edit_of(struct arena *a, const Shahidi__V1__Change *of)
{
	return tu_change(a, of->record_id.data, 1000 + ++rid_n, tu_now_hlc());
}

static void test_bad_changes(void)
{
	struct arena *a = arena_new();
	Shahidi__V1__Change *base = tu_report(a, FORMS, 1, 1, tu_now_hlc());
	struct buf body = {0};
	tu_batch(&body, DEV, ++batch_seq, &base, 1, CODEC_DEFLATE);
	CHECK(tu_push(S, FORMS, &body, NULL, NULL) == 0);
	Shahidi__V1__Change *c;

	c = tu_report(a, FORMS, 2, 2, tu_now_hlc());
	c->form_id = "medical_intake";
	rejected(c, "unknown_form");
	c = tu_report(a, FORMS, 2, 2, tu_now_hlc());
	c->form_version = 7;
	rejected(c, "unknown_form_version");

	c = edit_of(a, base);
	tu_set(a, c, 53, tu_text(a, "047"), 0, NULL); /* county is a choice */
	rejected(c, "wrong_type");
	c = edit_of(a, base);
	tu_set(a, c, 53, tu_choice(a, "048"), 0, NULL);
	rejected(c, "choice_not_in_vocabulary");
	char *long_text = arena_alloc(a, 8002);
	memset(long_text, 'a', 8001);
	long_text[8001] = 0;
	c = edit_of(a, base);
	tu_set(a, c, 62, tu_text(a, long_text), 0, NULL); /* narrative: at most 8000 */
	rejected(c, "text_too_long");
	c = edit_of(a, base);
	tu_set(a, c, 50, tu_date(a, "2099-01-01"), 0, NULL);
	rejected(c, "future_date");
	c = edit_of(a, base);
	tu_set(a, c, 50, tu_date(a, "2024-02-30"), 0, NULL);
	rejected(c, "bad_date");
	c = edit_of(a, base);
	tu_set(a, c, 35, tu_int(a, 121), 0, NULL);
	rejected(c, "out_of_range");

	c = edit_of(a, base);
	c->record_id.len = 15;
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	rejected(c, "bad_record_id");
	c = edit_of(a, base);
	c->record_id.data = arena_zalloc(a, 16); /* the nil UUID */
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	rejected(c, "bad_record_id");

	c = edit_of(a, base);
	rejected(c, "empty_change");
	c = edit_of(a, base);
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	tu_set(a, c, 142, tu_text(a, "y"), 0, NULL);
	rejected(c, "duplicate_field");
	c = edit_of(a, base);
	tu_set(a, c, 30, NULL, 0, NULL); /* survivor code is required */
	rejected(c, "required_cleared");
	c = tu_report(a, FORMS, 3, 3, tu_now_hlc());
	c->fields[1] = c->fields[0]; /* drop consent_given_by (field 10) */
	c->fields[0] = c->fields[--c->n_fields];
	rejected(c, "required_missing");
	c = edit_of(a, base);
	c->hlc = 0;
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	rejected(c, "bad_stamp");
	c = edit_of(a, base);
	c->origin = DEV2;
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	rejected(c, "origin_not_allowed");
	c = edit_of(a, base); /* only an admin's erasure marks a change erased */
	c->erased = true;
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	rejected(c, "erased_not_allowed");
	c = edit_of(a, base);
	c->change_id = 0;
	tu_set(a, c, 142, tu_text(a, "x"), 0, NULL);
	rejected(c, "bad_change_id");
	/* a field 75 exists only in v2: a v1 change with a v2 choice code */
	c = edit_of(a, base);
	Shahidi__V1__Value *v = tu_choice(a, "forced_eviction");
	Shahidi__V1__Choices *ch = arena_zalloc(a, sizeof(*ch));
	shahidi__v1__choices__init(ch);
	char *codes[] = {"forced_eviction"};
	ch->codes = codes;
	ch->n_codes = 1;
	v->kind_case = SHAHIDI__V1__VALUE__KIND_CHOICES;
	v->choices = ch;
	tu_set(a, c, 59, v, 0, NULL);
	rejected(c, "choice_not_in_vocabulary");
	buf_free(&body);
	arena_free(a);
}

static void test_mixed_batch_applies_the_good_ones(void)
{
	struct arena *a = arena_new();
	uint64_t hlc = tu_now_hlc();
	Shahidi__V1__Change *ch[3];
	ch[0] = tu_report(a, FORMS, 20, 20, hlc);
	ch[1] = tu_report(a, FORMS, 21, 21, hlc + 1);
	ch[1]->fields[0]->value = tu_choice(a, "lost"); /* status: not a status */
	ch[2] = tu_report(a, FORMS, 22, 22, hlc + 2);
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	struct tu_state before, after;
	tu_state(S, &before);
	tu_batch(&body, DEV, ++batch_seq, ch, 3, CODEC_DEFLATE);
	CHECK(tu_push(S, FORMS, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	CHECK_EQ_INT(resp->results[1]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__REJECTED);
	CHECK_EQ_STR(resp->results[1]->code, "choice_not_in_vocabulary");
	CHECK(strstr(resp->results[1]->reason, "status"));
	CHECK_EQ_INT(resp->results[2]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	tu_state(S, &after);
	CHECK_EQ_INT(after.n_records, before.n_records + 2);
	CHECK_EQ_INT(after.log_entries, before.log_entries + 2);

	/* The device's state says what was refused, for its coordinator. */
	struct store_txn *t;
	store_device_t *d;
	CHECK(store_begin(S, false, &t) == 0);
	CHECK(store_device_get(t, a, DEV, &d) == 0);
	CHECK(d->rejected >= 1 && strstr(d->last_reject, "choice_not_in_vocabulary"));
	store_abort(t);
	buf_free(&body);
	arena_free(a);
}

static void test_form_versions_and_unknown_fields(void)
{
	struct arena *a = arena_new();
	/* A newer app's field (999) on a v1 record is kept and passed on. */
	Shahidi__V1__Change *c = tu_report(a, FORMS, 30, 30, tu_now_hlc());
	tu_set(a, c, 999, tu_text(a, "from a newer app"), 0, NULL);
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	tu_batch(&body, DEV, ++batch_seq, &c, 1, CODEC_DEFLATE);
	CHECK(tu_push(S, FORMS, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	shahidi__v1__push_response__free_unpacked(resp, NULL);

	/* v2 is loaded: a v2 report with field 75 and a v2-only code, beside
	 * the v1 records. */
	Shahidi__V1__Change *c2 = tu_report(a, FORMS, 31, 31, tu_now_hlc());
	c2->form_version = 2;
	tu_set(a, c2, 75, tu_text(a, "AK-47"), 0, NULL);
	tu_batch(&body, DEV, ++batch_seq, &c2, 1, CODEC_DEFLATE);
	CHECK(tu_push(S, FORMS_V2, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	shahidi__v1__push_response__free_unpacked(resp, NULL);

	struct store_txn *t;
	merge_rec_t *rec;
	CHECK(store_begin(S, false, &t) == 0);
	CHECK(store_record_get(t, a, c->record_id.data, &rec) == 0);
	const merge_entry_t *e = merge_current(merge_register(rec, 999));
	CHECK(e && e->value.len > 10);
	CHECK_EQ_INT(rec->form_version, 1);
	CHECK(store_record_get(t, a, c2->record_id.data, &rec) == 0);
	CHECK_EQ_INT(rec->form_version, 2);
	CHECK(merge_current(merge_register(rec, 75)));
	store_abort(t);
	buf_free(&body);
	arena_free(a);
}

/* Adds a write of field to instance id (16 bytes; NULL: the record's). */
static void iset(struct arena *a, Shahidi__V1__Change *c, const uint8_t *id, uint32_t field,
		 Shahidi__V1__Value *v)
{
	tu_set(a, c, field, v, 0, NULL);
	if (id)
		c->fields[c->n_fields - 1]->instance = (ProtobufCBinaryData){16, (uint8_t *)id};
}

static Shahidi__V1__Change *v3_change(struct arena *a, const uint8_t *rid, uint64_t *id)
{
	Shahidi__V1__Change *c = tu_change(a, rid, (*id)++, tu_now_hlc());
	c->form_version = 3;
	return c;
}

static uint8_t *new_id(struct arena *a, struct gen_rng *r)
{
	uint8_t *id = arena_alloc(a, 16);
	gen_instance_id(r, sh_now_ms(), id);
	return id;
}

/* The checks of a change's instance writes find the same in any order of
 * its writes: each instance's writes in one run (as apps send them) or
 * apart, more instances than the decoder keeps in view, a field of the
 * record's that the form does not know. */
static void test_instance_writes_in_any_order(void)
{
	struct arena *a = arena_new();
	struct gen_rng r = {7};
	const struct form *f3 = form_registry_find(FORMS, "incident_report", 3);
	CHECK(f3 != NULL);
	Shahidi__V1__Change *rec = gen_report(&r, a, f3, 40, tu_now_hlc(), sh_now_ms());
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	tu_batch(&body, DEV, ++batch_seq, &rec, 1, CODEC_DEFLATE);
	CHECK(tu_push(S, FORMS, &body, &resp, NULL) == 0);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	const uint8_t *rid = rec->record_id.data;
	uint64_t id = 1000;
	uint8_t *v = new_id(a, &r), *p = new_id(a, &r);
	Shahidi__V1__Change *c, *ok[4];
	size_t n_ok = 0;

	/* the victim's writes apart, the perpetrator's between them: fine */
	c = v3_change(a, rid, &id);
	iset(a, c, v, 201, tu_text(a, "Achieng"));
	iset(a, c, p, 220, tu_choice(a, "kps"));
	iset(a, c, v, 205, tu_int(a, 30));
	ok[n_ok++] = c;
	/* 17 new perpetrators, each in a run, fields falling within one */
	c = v3_change(a, rid, &id);
	for (int k = 0; k < 17; k++) {
		uint8_t *q = new_id(a, &r);
		iset(a, c, q, 221, tu_int(a, k + 1));
		iset(a, c, q, 220, tu_choice(a, "aps"));
	}
	ok[n_ok++] = c;
	/* two instances whose ids differ only in their last byte: two, each
	 * of its own group (apart and together) */
	c = v3_change(a, rid, &id);
	uint8_t *v2 = arena_alloc(a, 16), *p2 = arena_alloc(a, 16);
	gen_instance_id(&r, sh_now_ms(), v2);
	memcpy(p2, v2, 16);
	p2[15] ^= 1;
	iset(a, c, v2, 201, tu_text(a, "Wanjiru"));
	iset(a, c, p2, 220, tu_choice(a, "kps"));
	iset(a, c, v2, 205, tu_int(a, 31));
	iset(a, c, p2, 221, tu_int(a, 2));
	ok[n_ok++] = c;
	/* a newer app's record field, written once, beside instances */
	c = v3_change(a, rid, &id);
	iset(a, c, new_id(a, &r), 220, tu_choice(a, "kdf"));
	iset(a, c, NULL, 999, tu_text(a, "from a newer app"));
	iset(a, c, new_id(a, &r), 220, tu_choice(a, "nis"));
	ok[n_ok++] = c;
	for (size_t i = 0; i < n_ok; i++) {
		tu_batch(&body, DEV, ++batch_seq, &ok[i], 1, CODEC_DEFLATE);
		CHECK(tu_push(S, FORMS, &body, &resp, NULL) == 0);
		CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
		shahidi__v1__push_response__free_unpacked(resp, NULL);
	}

	/* the same field of one instance twice, apart or together */
	c = v3_change(a, rid, &id);
	iset(a, c, v, 201, tu_text(a, "once"));
	iset(a, c, p, 220, tu_choice(a, "kps"));
	iset(a, c, v, 201, tu_text(a, "twice"));
	rejected(c, "duplicate_field");
	c = v3_change(a, rid, &id);
	iset(a, c, p, 220, tu_choice(a, "kps"));
	iset(a, c, v, 201, tu_text(a, "once"));
	iset(a, c, v, 201, tu_text(a, "twice"));
	rejected(c, "duplicate_field");
	/* a newer app's record field twice, apart */
	c = v3_change(a, rid, &id);
	iset(a, c, NULL, 999, tu_text(a, "once"));
	iset(a, c, p, 220, tu_choice(a, "kps"));
	iset(a, c, NULL, 999, tu_text(a, "twice"));
	rejected(c, "duplicate_field");
	/* one new instance with fields of two groups, apart or together */
	uint8_t *w = new_id(a, &r);
	c = v3_change(a, rid, &id);
	iset(a, c, w, 201, tu_text(a, "x"));
	iset(a, c, p, 220, tu_choice(a, "kps"));
	iset(a, c, w, 222, tu_text(a, "y"));
	rejected(c, "instance_group_mismatch");
	c = v3_change(a, rid, &id);
	iset(a, c, w, 201, tu_text(a, "x"));
	iset(a, c, w, 222, tu_text(a, "y"));
	rejected(c, "instance_group_mismatch");
	/* past the runs kept in view: a duplicate after 16 other instances */
	c = v3_change(a, rid, &id);
	iset(a, c, v, 201, tu_text(a, "once"));
	for (int k = 0; k < 16; k++)
		iset(a, c, new_id(a, &r), 220, tu_choice(a, "aps"));
	iset(a, c, v, 201, tu_text(a, "twice"));
	rejected(c, "duplicate_field");
	buf_free(&body);
	arena_free(a);
}

int main(void)
{
	FORMS = tu_forms(false);
	FORMS_V2 = tu_forms(true);
	tu_tmpdir(DIR_);
	S = tu_store_open(DIR_, NULL);
	DEV = tu_enrol(S, "phone", "047", ROLE_DEVICE, NULL);
	DEV2 = tu_enrol(S, "other phone", "001", ROLE_DEVICE, NULL);
	RUN(test_undecodable_batches);
	RUN(test_limits);
	RUN(test_bad_changes);
	RUN(test_mixed_batch_applies_the_good_ones);
	RUN(test_form_versions_and_unknown_fields);
	RUN(test_instance_writes_in_any_order);
	RUN(test_required_missing_names_the_first);
	store_close(S);
	tu_rmrf(DIR_);
	form_registry_free(FORMS);
	form_registry_free(FORMS_V2);
	return 0;
}
