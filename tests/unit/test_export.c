/* Export in C, through a real store: every exported value is the one the
 * merge shows (checked against the record unpacked and merged by the
 * store's own path, not export's in-place reading), for pointer records
 * and full ones; sensitive fields, deleted records and county filters;
 * pages of any size give the same bytes. */
#include <errno.h>
#include <jansson.h>

#include "check.h"
#include "common.h"
#include "export.h"
#include "hlc.h"
#include "merge.h"
#include "store.h"
#include "testutil.h"
#include "uuid.h"

static struct store *S;
static struct form_registry *FORMS;
static struct arena *A;

enum { F_COUNTY = 53, F_NARRATIVE = 62, F_RISK = 140, F_CASEWORKER = 142 };

/* The whole export, pages of max_scan stored records. */
static void export_all(const struct export_opts *o, size_t max_scan, struct buf *out)
{
	struct exporter *x;
	char err[128];
	uint64_t cursor = 0;
	bool done = false;
	buf_reset(out);
	CHECK_EQ_INT(export_new(FORMS, o, &x, err, sizeof(err)), 0);
	CHECK_EQ_INT(export_header(x, out), 0);
	while (!done)
		CHECK(export_page(x, S, &cursor, max_scan, out, &done) >= 0);
	export_free(x);
}

/* The NDJSON lines of out, by record id. */
static json_t *by_id(const struct buf *out)
{
	json_t *m = json_object();
	const char *p = (const char *)out->data, *end = p + out->len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		CHECK(nl);
		json_error_t e;
		json_t *j = json_loadb(p, (size_t)(nl - p), 0, &e);
		CHECK(j);
		json_object_set_new(m, json_string_value(json_object_get(j, "record_id")), j);
		p = nl + 1;
	}
	return m;
}

/* The value the merge shows for field of record rid, as export writes it
 * in NDJSON (a choice's code, a text), or NULL when none. */
static const char *merged(const uint8_t rid[16], uint32_t field, char *out, size_t cap)
{
	struct store_txn *t;
	merge_rec_t *rec;
	const char *ret = NULL;
	CHECK_EQ_INT(store_begin(S, false, &t), 0);
	CHECK_EQ_INT(store_record_get(t, A, rid, &rec), 0);
	const merge_entry_t *e = merge_current(merge_register(rec, field));
	struct form_value fv;
	if (e && form_value_parse(e->value.data, e->value.len, &fv) == 0 &&
	    (fv.kind == FT_CHOICE || fv.kind == FT_TEXT) && fv.str_len < cap) {
		memcpy(out, fv.str, fv.str_len);
		out[fv.str_len] = 0;
		ret = out;
	}
	store_abort(t);
	return ret;
}

static const char *exported(json_t *rows, const uint8_t rid[16], const char *name)
{
	char id[37];
	uuid_fmt(rid, id);
	json_t *row = json_object_get(rows, id);
	if (!row)
		return NULL;
	json_t *v = json_object_get(json_object_get(row, "fields"), name);
	if (json_is_object(v)) /* a choice: {"code": ..., "label": ...} */
		v = json_object_get(v, "code");
	return json_string_value(v);
}

int main(void)
{
	char dir[256], county[4];
	struct buf out = {0}, again = {0};
	tu_tmpdir(dir);
	S = tu_store_open(dir, NULL);
	FORMS = tu_forms(false);
	A = arena_new();
	uint64_t a_dev = tu_enrol(S, "phone a", "047", ROLE_DEVICE, NULL);
	uint64_t b_dev = tu_enrol(S, "phone b", "047", ROLE_DEVICE, NULL);
	CHECK(a_dev && b_dev);

	/* Twelve reports by phone a: pointer records, as created. */
	Shahidi__V1__Change *rep[12];
	uint64_t hlc = tu_now_hlc();
	for (int i = 0; i < 12; i++) {
		rep[i] = tu_report(A, FORMS, 1000 + (uint64_t)i, (uint64_t)i + 1, hlc + (uint64_t)i);
		tu_push1(S, FORMS, a_dev, (uint64_t)i + 1, rep[i]);
	}
	const uint8_t *r0 = rep[0]->record_id.data, *r1 = rep[1]->record_id.data,
		      *r2 = rep[2]->record_id.data;

	/* Report 1: a conflict. Both phones set the risk level without
	 * seeing each other's; b's stamp is the later, a's device id may be
	 * either side of b's: the merge decides which is shown. */
	tu_assign(S, r1, b_dev);
	Shahidi__V1__Change *ea = tu_change(A, r1, 13, hlc + 100);
	tu_set(A, ea, F_RISK, tu_choice(A, "urgent"), 0, NULL);
	tu_set(A, ea, F_CASEWORKER, tu_text(A, "Achieng"), 0, NULL);
	tu_push1(S, FORMS, a_dev, 13, ea);
	Shahidi__V1__Change *eb = tu_change(A, r1, 1, hlc + 200);
	tu_set(A, eb, F_RISK, tu_choice(A, "low"), 0, NULL);
	tu_push1(S, FORMS, b_dev, 1, eb);
	/* Report 2: deleted by its phone, having seen everything. */
	Shahidi__V1__Change *del = tu_change(A, r2, 14, hlc + 300);
	tu_delete(A, del, true, 0, NULL);
	tu_push1(S, FORMS, a_dev, 14, del);

	fprintf(stderr, "-- every value exported is the one the merge shows\n");
	struct export_opts o = {.format = EXPORT_NDJSON, .include_sensitive = true, .threads = 2};
	export_all(&o, 1000, &out);
	json_t *rows = by_id(&out);
	CHECK_EQ_INT(json_object_size(rows), 11); /* not the deleted one */
	static char want[40000];
	for (int i = 0; i < 12; i++) {
		const uint8_t *rid = rep[i]->record_id.data;
		if (i == 2) {
			CHECK(!exported(rows, rid, "incident_county"));
			continue;
		}
		const struct {
			uint32_t number;
			const char *name;
		} f[] = {{F_COUNTY, "incident_county"}, {F_RISK, "risk_level"},
			 {F_CASEWORKER, "caseworker"}, {F_NARRATIVE, "narrative"}};
		for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
			const char *m = merged(rid, f[k].number, want, sizeof(want));
			const char *x = exported(rows, rid, f[k].name);
			if ((m == NULL) != (x == NULL))
				fprintf(stderr, "report %d, %s: merged %s, exported %s\n", i, f[k].name,
					m ? m : "(none)", x ? x : "(none)");
			CHECK((m == NULL) == (x == NULL));
			if (m)
				CHECK_EQ_STR(x, m);
		}
	}
	/* the conflict: the later stamp is shown, and flagged */
	CHECK_EQ_STR(exported(rows, r1, "risk_level"), "low");
	CHECK_EQ_STR(exported(rows, r1, "caseworker"), "Achieng");
	char id1[37];
	uuid_fmt(r1, id1);
	CHECK(json_is_true(json_object_get(json_object_get(rows, id1), "conflict")));
	CHECK_EQ_STR(merged(r0, F_COUNTY, county, sizeof(county)), exported(rows, r0, "incident_county"));
	json_decref(rows);

	fprintf(stderr, "-- pages of any size give the same bytes, on any number of threads\n");
	struct export_opts one = o;
	one.threads = 1;
	export_all(&one, 1, &again);
	CHECK(again.len == out.len && !memcmp(again.data, out.data, out.len));
	o.format = one.format = EXPORT_CSV;
	export_all(&o, 1000, &out);
	export_all(&one, 3, &again);
	CHECK(again.len == out.len && !memcmp(again.data, out.data, out.len));

	fprintf(stderr, "-- sensitive fields are left out unless asked for\n");
	o.format = EXPORT_NDJSON;
	o.include_sensitive = false;
	export_all(&o, 1000, &out);
	rows = by_id(&out);
	CHECK_EQ_INT(json_object_size(rows), 11);
	for (int i = 0; i < 12; i++)
		CHECK(!exported(rows, rep[i]->record_id.data, "narrative"));
	CHECK(exported(rows, r0, "incident_county"));
	json_decref(rows);
	o.format = EXPORT_CSV;
	export_all(&o, 1000, &out);
	buf_putc(&out, 0);
	CHECK(!strstr((const char *)out.data, "Narrative"));
	CHECK(strstr((const char *)out.data, "County"));

	fprintf(stderr, "-- deleted records only when asked for, flagged\n");
	o.format = EXPORT_NDJSON;
	o.include_deleted = true;
	export_all(&o, 1000, &out);
	rows = by_id(&out);
	CHECK_EQ_INT(json_object_size(rows), 12);
	char id2[37];
	uuid_fmt(r2, id2);
	CHECK(json_is_true(json_object_get(json_object_get(rows, id2), "deleted")));
	json_decref(rows);

	fprintf(stderr, "-- a county filter keeps that county's records only\n");
	o.include_deleted = false;
	const char *cs[1] = {county};
	o.counties = cs;
	o.n_counties = 1;
	export_all(&o, 1000, &out);
	rows = by_id(&out);
	size_t n_in = 0;
	for (int i = 0; i < 12; i++) {
		char c[8];
		if (i != 2 && !strcmp(merged(rep[i]->record_id.data, F_COUNTY, c, sizeof(c)), county))
			n_in++;
	}
	CHECK(n_in >= 1);
	CHECK_EQ_INT(json_object_size(rows), n_in);
	const char *k;
	json_t *row;
	json_object_foreach(rows, k, row)
	{
		json_t *c = json_object_get(json_object_get(row, "fields"), "incident_county");
		if (json_is_object(c))
			c = json_object_get(c, "code");
		CHECK(json_string_value(c) && !strcmp(json_string_value(c), county));
	}
	json_decref(rows);

	fprintf(stderr, "-- an unknown form is refused\n");
	struct exporter *x;
	char err[128] = "";
	struct export_opts bad = {.form_id = "no_such_form"};
	CHECK_EQ_INT(export_new(FORMS, &bad, &x, err, sizeof(err)), -ENOENT);
	CHECK(err[0]);

	buf_free(&out);
	buf_free(&again);
	arena_free(A);
	store_close(S);
	form_registry_free(FORMS);
	tu_rmrf(dir);
	return 0;
}
