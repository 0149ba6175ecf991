/* Form definitions and value validation: what the server accepts into a
 * record. Each rule is tried with a value just inside and just outside it,
 * and values are checked from heap buffers of exactly their size so that
 * ASan sees any read past the end. */
#include <errno.h>
#include <math.h>

#include "check.h"
#include "common.h"
#include "form.h"
#include "shahidi.pb-c.h"
#include "testutil.h"

#define DAY_MS 86400000ll
/* 2025-06-15 is day 20254: 55 years from 1970 with 14 leap days is 20089
 * days to 2025-01-01, plus 31+28+31+30+31 for January..May, plus 14. */
#define TODAY 20254ll
#define NOW ((uint64_t)(TODAY * DAY_MS + 12 * 3600000ll)) /* noon UTC */

static struct form_registry *REG;  /* built-in v1 and the v2 fixture */
static const struct form *V1, *V2;

static const struct form_field *fld(const struct form *f, uint32_t number)
{
	const struct form_field *fd = form_field(f, number);
	CHECK(fd);
	return fd;
}

/* An encoded Value on the heap, exactly its size. */
struct val {
	uint8_t *p;
	size_t n;
};

static struct val raw(const void *bytes, size_t n)
{
	struct val v = {malloc(n ? n : 1), n};
	CHECK(v.p);
	memcpy(v.p, bytes, n);
	return v;
}

static struct val pack(const Shahidi__V1__Value *m)
{
	uint8_t tmp[4096];
	size_t n = shahidi__v1__value__get_packed_size(m);
	CHECK(n <= sizeof(tmp));
	CHECK_EQ_INT(shahidi__v1__value__pack(m, tmp), n);
	return raw(tmp, n);
}

/* A function making an encoded Value with one member set. */
#define VALUE_FN(fn, type, member, kind, as)                                   \
	static struct val fn(type x)                                         \
	{                                                                    \
		Shahidi__V1__Value m = SHAHIDI__V1__VALUE__INIT;             \
		m.kind_case = SHAHIDI__V1__VALUE__KIND_##kind;               \
		m.member = (as)x;                                            \
		return pack(&m);                                             \
	}

VALUE_FN(text, const char *, text, TEXT, char *)
VALUE_FN(integer, int64_t, integer, INTEGER, int64_t)
VALUE_FN(decimal, double, decimal, DECIMAL, double)
VALUE_FN(date, const char *, date, DATE, char *)
VALUE_FN(datetime, int64_t, datetime, DATETIME, int64_t)
VALUE_FN(choice, const char *, choice, CHOICE, char *)
VALUE_FN(choices_msg, Shahidi__V1__Choices *, choices, CHOICES, Shahidi__V1__Choices *)
VALUE_FN(geopoint_msg, Shahidi__V1__GeoPoint *, geopoint, GEOPOINT, Shahidi__V1__GeoPoint *)

static struct val choices(size_t n, const char *const *codes)
{
	Shahidi__V1__Choices c = SHAHIDI__V1__CHOICES__INIT;
	c.n_codes = n;
	c.codes = (char **)codes;
	return choices_msg(&c);
}

static struct val geopoint(double lat, double lon)
{
	Shahidi__V1__GeoPoint g = SHAHIDI__V1__GEO_POINT__INIT;
	g.latitude = lat;
	g.longitude = lon;
	return geopoint_msg(&g);
}

static struct val attachment(size_t id_len, const char *media_type, size_t media_len)
{
	static const uint8_t bytes[32] = {1, 2, 3};
	Shahidi__V1__Attachment a = SHAHIDI__V1__ATTACHMENT__INIT;
	a.file_id = (ProtobufCBinaryData){id_len, (uint8_t *)bytes};
	a.sha256 = (ProtobufCBinaryData){32, (uint8_t *)bytes};
	a.size = 123456;
	/* Written by hand as field 4 when media_len says it holds a NUL:
	 * protobuf-c packs strings only up to their first NUL. */
	a.media_type = media_len == strlen(media_type) ? (char *)media_type : (char *)"";
	uint8_t sub[512];
	size_t n = shahidi__v1__attachment__pack(&a, sub);
	if (media_len != strlen(media_type)) {
		CHECK(media_len < 128 && n + 2 + media_len < sizeof(sub));
		sub[n++] = 0x22; /* field 4, bytes */
		sub[n++] = (uint8_t)media_len;
		memcpy(sub + n, media_type, media_len);
		n += media_len;
	}
	CHECK(n < 128);
	uint8_t buf[130] = {0x52, (uint8_t)n}; /* Value field 10, bytes */
	memcpy(buf + 2, sub, n);
	return raw(buf, n + 2);
}

/* The verdict code for v in field fd at NOW, "ok" when accepted. */
static const char *verdict(const struct form_field *fd, struct val v)
{
	static struct form_verdict ver;
	memset(&ver, 0, sizeof(ver));
	int r = form_check_value(fd, v.p, v.n, NOW, &ver);
	free(v.p);
	if (r == 0)
		return "ok";
	CHECK_EQ_INT(r, -EINVAL);
	/* The reason names the field, never the value. */
	char want[80];
	snprintf(want, sizeof(want), "field %u (%s): ", fd->number, fd->name);
	CHECK(!strncmp(ver.reason, want, strlen(want)));
	CHECK(ver.code[0]);
	return ver.code;
}

static void test_builtin_v1(void)
{
	struct form_registry *reg;
	char err[256] = "";
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	CHECK_EQ_INT(form_registry_add_builtin(reg, err, sizeof(err)), 0);
	CHECK_EQ_INT(form_registry_count(reg), 2); /* v1 and v3 */
	const struct form *f = form_registry_find(reg, "incident_report", 1);
	CHECK(f);
	CHECK(!form_registry_find(reg, "incident_report", 2));
	CHECK_EQ_INT(f->n_groups, 0);
	CHECK(!form_registry_find(reg, "incident", 1));

	const struct form_field *county = fld(f, 53);
	CHECK_EQ_STR(county->name, "incident_county");
	CHECK_EQ_INT(county->type, FT_CHOICE);
	CHECK_EQ_INT(county->n_choices, 47);
	CHECK_EQ_STR(county->choices[0].code, "001");
	CHECK_EQ_STR(county->choices[0].label, "Mombasa");
	CHECK_EQ_STR(county->choices[46].code, "047");
	CHECK_EQ_STR(county->choices[46].label, "Nairobi City");
	CHECK(form_choice(county, "047", 3) == &county->choices[46]);
	CHECK(!form_choice(county, "04", 2));
	/* every code found, as itself only: not with a byte more, a NUL in
	 * it, or a longer code's prefix */
	for (size_t i = 0; i < county->n_choices; i++) {
		const char *code = county->choices[i].code;
		char more[8], nul[8];
		snprintf(more, sizeof(more), "%s0", code);
		memcpy(nul, code, 3);
		nul[1] = 0;
		CHECK(form_choice(county, code, strlen(code)) == &county->choices[i]);
		CHECK(!form_choice(county, more, strlen(more)));
		CHECK(!form_choice(county, nul, 3));
		CHECK(!form_choice(county, code, 2));
	}
	CHECK(!form_choice(county, "", 0));
	CHECK(!form_choice(county, "\xff\xff\xff", 3));
	const struct form_field *method = fld(f, 58); /* context: words */
	CHECK(method && method->n_choices > 3);
	for (size_t i = 0; i < method->n_choices; i++)
		CHECK(form_choice(method, method->choices[i].code, strlen(method->choices[i].code)) ==
		      &method->choices[i]);

	static const struct {
		uint32_t number;
		const char *name;
		bool required, sensitive;
	} flags[] = {
		{1, "status", true, false},          {10, "consent_given_by", true, false},
		{30, "survivor_code", true, false},  {53, "incident_county", true, false},
		{59, "violation_types", true, false}, {62, "narrative", false, true},
		{31, "survivor_name", false, true},  {50, "incident_date", false, false},
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(flags); i++) {
		const struct form_field *fd = fld(f, flags[i].number);
		CHECK_EQ_STR(fd->name, flags[i].name);
		CHECK_EQ_INT(fd->required, flags[i].required);
		CHECK_EQ_INT(fd->sensitive, flags[i].sensitive);
	}
	CHECK_EQ_INT(fld(f, 59)->type, FT_CHOICES);
	CHECK_EQ_INT(fld(f, 62)->max_length, 8000);
	CHECK(fld(f, 141)->allow_future);
	CHECK(!fld(f, 50)->allow_future);
	CHECK(!form_field(f, 2));
	form_registry_free(reg);
}

/* Version 3: who did what to whom, as repeat groups. */
static void test_builtin_v3_groups(void)
{
	struct form_registry *reg;
	char err[256] = "";
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	CHECK_EQ_INT(form_registry_add_builtin(reg, err, sizeof(err)), 0);
	const struct form *f = form_registry_find(reg, "incident_report", 3);
	CHECK(f);
	CHECK_EQ_INT(f->n_groups, 6);
	const struct form_group *v = form_group(f, "victims"), *a = form_group(f, "acts");
	const struct form_group *r = form_group(f, "referrals");
	CHECK(v && a && r && form_group(f, "perpetrators") && form_group(f, "involvements") &&
	      form_group(f, "sources") && !form_group(f, "nope"));
	CHECK(fld(f, 200)->group == v && fld(f, 201)->sensitive);
	CHECK(fld(f, 244)->type == FT_LINK && fld(f, 244)->link_group == v && fld(f, 244)->group == a);
	CHECK(r->parent == v && r->parent_field == fld(f, 280));
	CHECK(!fld(f, 1)->group && f->county_field == fld(f, 53));
	CHECK(!form_field(f, 30) && !form_field(f, 59)); /* v1's survivor block is the first victim */
	CHECK_EQ_INT(v->max, 50);

	/* A link holds a 16-byte id, not nil. */
	struct form_verdict ver;
	uint8_t link[18] = {0x62, 16};
	CHECK(form_check_value(fld(f, 244), link, 18, 0, &ver) < 0 && !strcmp(ver.code, "bad_link"));
	link[5] = 7;
	CHECK(form_check_value(fld(f, 244), link, 18, 0, &ver) == 0);
	CHECK(form_check_value(fld(f, 244), link, 10, 0, &ver) < 0);

	/* What a broken definition is told. */
	static const struct {
		const char *json, *says;
	} bad[] = {
		{"{\"form_id\":\"x\",\"version\":1,\"fields\":[{\"number\":1,\"name\":\"a\","
		 "\"type\":\"text\",\"group\":\"g\"}]}", "no group named g"},
		{"{\"form_id\":\"x\",\"version\":1,\"groups\":[{\"name\":\"g\"}],\"fields\":["
		 "{\"number\":1,\"name\":\"a\",\"type\":\"text\",\"group\":\"g\",\"required\":true}]}",
		 "cannot be required"},
		{"{\"form_id\":\"x\",\"version\":1,\"groups\":[{\"name\":\"g\"}],\"fields\":["
		 "{\"number\":1,\"name\":\"a\",\"type\":\"link\",\"group\":\"g\"}]}", "link_group"},
		{"{\"form_id\":\"x\",\"version\":1,\"groups\":[{\"name\":\"g\",\"parent\":\"g\"}],"
		 "\"fields\":[{\"number\":1,\"name\":\"a\",\"type\":\"text\"}]}", "one level"},
		{"{\"form_id\":\"x\",\"version\":1,\"groups\":[{\"name\":\"g\",\"min\":3,\"max\":2}],"
		 "\"fields\":[{\"number\":1,\"name\":\"a\",\"type\":\"text\"}]}", "min is above max"},
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(bad); i++) {
		err[0] = 0;
		CHECK_EQ_INT(form_registry_add_json(reg, bad[i].json, strlen(bad[i].json), "t.json", err,
						    sizeof(err)), -EINVAL);
		CHECK(strstr(err, bad[i].says));
	}
	form_registry_free(reg);
}

static void test_v2_fixture(void)
{
	char err[256] = "";
	CHECK_EQ_INT(form_registry_count(REG), 3); /* v1 and v3 built in, v2 from the file */
	CHECK(V1 && V2 && V1 != V2);
	CHECK_EQ_INT(V2->version, 2);
	/* Sorted by (form_id, version). */
	CHECK(form_registry_at(REG, 0) == V1);
	CHECK(form_registry_at(REG, 1) == V2);
	CHECK(form_registry_at(REG, 2) == form_registry_find(REG, "incident_report", 3));
	CHECK(!form_registry_at(REG, 3));

	CHECK(!form_field(V1, 75));
	CHECK_EQ_STR(fld(V2, 75)->name, "perpetrator_weapon");
	CHECK(!form_choice(fld(V1, 59), "forced_eviction", 15));
	CHECK(form_choice(fld(V2, 59), "forced_eviction", 15));

	/* The same version again, from either source. */
	err[0] = 0;
	CHECK_EQ_INT(form_registry_add_path(REG, SRCDIR "/tests/fixtures/incident_report.v2.json",
					    err, sizeof(err)), -EEXIST);
	CHECK(strstr(err, "already loaded"));
	CHECK_EQ_INT(form_registry_add_builtin(REG, err, sizeof(err)), -EEXIST);
	CHECK_EQ_INT(form_registry_count(REG), 3);

	CHECK_EQ_INT(form_registry_add_path(REG, SRCDIR "/tests/fixtures/none.json", err,
					    sizeof(err)), -ENOENT);
	CHECK(strstr(err, "none.json"));
}

/* A definition that must be refused, with a message holding `says`. */
static void refused(const char *json, const char *says)
{
	struct form_registry *reg;
	char err[256] = "";
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	int r = form_registry_add_json(reg, json, strlen(json), "t.json", err, sizeof(err));
	if (r != -EINVAL || !strstr(err, says) || !strstr(err, "t.json"))
		fprintf(stderr, "%s\n -> %d \"%s\", wanted \"%s\"\n", json, r, err, says);
	CHECK_EQ_INT(r, -EINVAL);
	CHECK(strstr(err, says));
	CHECK(strstr(err, "t.json"));
	CHECK_EQ_INT(form_registry_count(reg), 0);
	CHECK(!form_registry_find(reg, "t", 1));
	form_registry_free(reg);
}

#define F(x) "{\"form_id\":\"t\",\"version\":1,\"fields\":[" x "]}"
#define FV(x, v) "{\"form_id\":\"t\",\"version\":1,\"fields\":[" x "],\"vocabularies\":{" v "}}"

static void test_bad_definitions(void)
{
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"text\"},"
		  "{\"number\":1,\"name\":\"b\",\"type\":\"text\"}"), "share number 1");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"text\"},"
		  "{\"number\":2,\"name\":\"a\",\"type\":\"text\"}"), "two fields are named a");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"texty\"}"), "unknown type 'texty'");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"none\"}"), "unknown type 'none'");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"choice\"}"),
		"field a: choice and choices fields, and only they, name a vocabulary");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"text\",\"vocabulary\":\"v\"}"),
		"field a: choice and choices fields");
	refused(FV("{\"number\":1,\"name\":\"a\",\"type\":\"choice\",\"vocabulary\":\"w\"}",
		   "\"v\":[[\"x\",\"X\"]]"), "vocabulary w is missing");
	refused(FV("{\"number\":1,\"name\":\"a\",\"type\":\"choice\",\"vocabulary\":\"v\"}",
		   "\"v\":[[\"x\",\"X\"],[\"x\",\"Y\"]]"), "repeats code x");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"integer\",\"min\":5,\"max\":4}"),
		"field a: give both min and max, min <= max");
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"integer\",\"min\":5}"), "field a: give both");
	refused(F("{\"number\":0,\"name\":\"a\",\"type\":\"text\"}"), "number must be");
	refused("{\"form_id\":\"Incident-Report\",\"version\":1,"
		"\"fields\":[{\"number\":1,\"name\":\"a\",\"type\":\"text\"}]}",
		"form_id may hold only");
	refused("{\"form_id\":\"t\",\"version\":0,"
		"\"fields\":[{\"number\":1,\"name\":\"a\",\"type\":\"text\"}]}", "version");
	refused("{\"form_id\":\"t\",\"version\":1,\"fields\":[]}", "fields");
	refused("{\"form_id\":\"t\",\"version\":1,\"fields\":[", "t.json:1");
	refused("not json", "t.json");
	/* Two values for one key: which one did the author mean? */
	refused(F("{\"number\":1,\"name\":\"a\",\"type\":\"text\",\"type\":\"date\"}"), "t.json");

	/* The smallest good definition, for contrast. */
	struct form_registry *reg;
	char err[256] = "";
	const char *ok = F("{\"number\":1,\"name\":\"a\",\"type\":\"text\"}");
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	CHECK_EQ_INT(form_registry_add_json(reg, ok, strlen(ok), "t.json", err, sizeof(err)), 0);
	CHECK_EQ_INT(fld(form_registry_find(reg, "t", 1), 1)->max_length, 10000);
	form_registry_free(reg);
}

static void test_pack(void)
{
	struct buf b = {0};
	CHECK_EQ_INT(form_registry_pack(REG, &b), 0);
	Shahidi__V1__FormList *l = shahidi__v1__form_list__unpack(NULL, b.len, b.data);
	CHECK(l);
	CHECK_EQ_INT(l->n_forms, form_registry_count(REG));
	for (size_t i = 0; i < l->n_forms; i++) {
		const struct form *f = form_registry_at(REG, i);
		const Shahidi__V1__FormDef *d = l->forms[i];
		CHECK_EQ_STR(d->form_id, f->form_id);
		CHECK_EQ_INT(d->version, f->version);
		CHECK_EQ_INT(d->n_fields, f->n_fields);
		for (size_t j = 0; j < d->n_fields; j++) {
			const Shahidi__V1__FieldDef *x = d->fields[j];
			const struct form_field *y = &f->fields[j];
			CHECK_EQ_INT(x->number, y->number);
			CHECK_EQ_STR(x->name, y->name);
			CHECK_EQ_INT(x->type, y->type);
			CHECK_EQ_INT(x->required, y->required);
			CHECK_EQ_INT(x->sensitive, y->sensitive);
			CHECK_EQ_INT(x->n_choices, y->n_choices);
			for (size_t k = 0; k < x->n_choices; k++) {
				CHECK_EQ_STR(x->choices[k]->code, y->choices[k].code);
				CHECK_EQ_STR(x->choices[k]->label, y->choices[k].label);
			}
		}
	}
	CHECK_EQ_INT(l->forms[0]->n_fields, 67);
	CHECK_EQ_INT(l->forms[1]->n_fields, 68);
	shahidi__v1__form_list__free_unpacked(l, NULL);
	buf_free(&b);
}

static void test_check_text(void)
{
	const struct form_field *code = fld(V1, 30); /* survivor_code, 32 bytes */
	char s[40];
	memset(s, 'k', sizeof(s));
	s[32] = 0;
	CHECK_EQ_STR(verdict(code, text(s)), "ok");
	s[32] = 'k';
	s[33] = 0;
	CHECK_EQ_STR(verdict(code, text(s)), "text_too_long");
	/* Bytes, not characters: 11 three-byte dashes are 33 bytes. */
	char dashes[40] = "";
	for (int i = 0; i < 11; i++)
		strcat(dashes, "\xe2\x80\x93");
	CHECK_EQ_STR(verdict(code, text(dashes)), "text_too_long");
	dashes[30] = 0;
	CHECK_EQ_STR(verdict(code, text(dashes)), "ok");

	CHECK_EQ_STR(verdict(code, text("Nyeri \xe2\x80\x93 \xf0\x9f\x98\x80")), "ok");
	CHECK_EQ_STR(verdict(code, text("bad \xff")), "bad_text");
	CHECK_EQ_STR(verdict(code, text("\xc0\xaf")), "bad_text");     /* overlong '/' */
	CHECK_EQ_STR(verdict(code, text("\xed\xa0\x80")), "bad_text"); /* surrogate */
	CHECK_EQ_STR(verdict(code, text("cut \xe2\x80")), "bad_text");
	/* Text field 1, three bytes with a NUL in the middle. */
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0x0a, 3, 'a', 0, 'b'}, 5)), "bad_text");
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0x0a, 3, 'a', 'c', 'b'}, 5)), "ok");

	CHECK_EQ_STR(verdict(code, integer(5)), "wrong_type");
	CHECK_EQ_STR(verdict(fld(V1, 53), text("047")), "wrong_type");
	CHECK_EQ_STR(verdict(fld(V1, 12), text("2025-01-01")), "wrong_type");
}

static void test_check_numbers(void)
{
	const struct form_field *age = fld(V1, 35); /* 0..120 */
	CHECK_EQ_STR(verdict(age, integer(0)), "ok");
	CHECK_EQ_STR(verdict(age, integer(120)), "ok");
	CHECK_EQ_STR(verdict(age, integer(-1)), "out_of_range");
	CHECK_EQ_STR(verdict(age, integer(121)), "out_of_range");
	CHECK_EQ_STR(verdict(age, integer(INT64_MIN)), "out_of_range");
	CHECK_EQ_STR(verdict(age, integer(INT64_MAX)), "out_of_range");
	CHECK_EQ_STR(verdict(fld(V1, 40), integer(0)), "out_of_range"); /* group_size 1.. */

	/* v1 has no decimal or date-time field: a small form of our own. */
	const char *json = F("{\"number\":1,\"name\":\"amount\",\"type\":\"decimal\","
			     "\"min\":-10,\"max\":10.5},"
			     "{\"number\":2,\"name\":\"ratio\",\"type\":\"decimal\"},"
			     "{\"number\":3,\"name\":\"seen_at\",\"type\":\"datetime\"}");
	struct form_registry *reg;
	char err[256] = "";
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	CHECK_EQ_INT(form_registry_add_json(reg, json, strlen(json), "t.json", err, sizeof(err)), 0);
	const struct form *f = form_registry_find(reg, "t", 1);
	const struct form_field *amount = fld(f, 1), *ratio = fld(f, 2), *seen = fld(f, 3);
	CHECK_EQ_STR(verdict(amount, decimal(-10)), "ok");
	CHECK_EQ_STR(verdict(amount, decimal(10.5)), "ok");
	CHECK_EQ_STR(verdict(amount, decimal(10.51)), "out_of_range");
	CHECK_EQ_STR(verdict(amount, decimal(-10.01)), "out_of_range");
	/* Without a range any finite number, and never NaN or infinity. */
	CHECK_EQ_STR(verdict(ratio, decimal(-1e300)), "ok");
	CHECK_EQ_STR(verdict(ratio, decimal(NAN)), "out_of_range");
	CHECK_EQ_STR(verdict(ratio, decimal(INFINITY)), "out_of_range");
	CHECK_EQ_STR(verdict(ratio, decimal(-INFINITY)), "out_of_range");
	CHECK_EQ_STR(verdict(amount, decimal(NAN)), "out_of_range");
	CHECK_EQ_STR(verdict(ratio, integer(1)), "wrong_type");

	/* 1900-01-01 is 25567 days (70 x 365 + 17 leap days) before 1970. */
	const int64_t y1900 = -25567 * DAY_MS;
	CHECK_EQ_STR(verdict(seen, datetime(y1900)), "ok");
	CHECK_EQ_STR(verdict(seen, datetime(y1900 - 1)), "bad_date");
	CHECK_EQ_STR(verdict(seen, datetime((int64_t)NOW)), "ok");
	CHECK_EQ_STR(verdict(seen, datetime((int64_t)NOW + 3 * DAY_MS)), "future_date");
	form_registry_free(reg);
}

static void test_check_dates(void)
{
	const struct form_field *inc = fld(V1, 50), *follow = fld(V1, 141);
	CHECK_EQ_STR(verdict(inc, date("2024-02-29")), "ok");
	CHECK_EQ_STR(verdict(inc, date("2000-02-29")), "ok");
	CHECK_EQ_STR(verdict(inc, date("1900-01-01")), "ok");
	CHECK_EQ_STR(verdict(inc, date("2025-06-15")), "ok"); /* today */
	CHECK_EQ_STR(verdict(inc, date("2025-06-16")), "ok"); /* a phone east of UTC */
	static const char *const bad[] = {
		"2025-02-29", "1900-02-29", "2025-13-01", "2025-00-10", "2025-04-31",
		"2025-1-01",  "2025-01-1",  "2025/01/01", "2025-01-01 ", "1899-12-31",
		"",           "20250101",   "2025-01-0a", "2025-01-0:", "2025-01-0/",
		":025-01-01", "2025-0/-01", "2025-01-/1", ("2\xb0" "25-01-01"), /* split: \xb0 then "25" */
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(bad); i++) {
		const char *v = verdict(inc, date(bad[i]));
		if (strcmp(v, "bad_date"))
			fprintf(stderr, "\"%s\": %s\n", bad[i], v);
		CHECK_EQ_STR(v, "bad_date");
	}
	CHECK_EQ_STR(verdict(inc, date("2025-06-18")), "future_date");
	CHECK_EQ_STR(verdict(inc, date("2099-01-01")), "future_date");
	CHECK_EQ_STR(verdict(follow, date("2025-06-18")), "ok");
	CHECK_EQ_STR(verdict(follow, date("2099-01-01")), "ok");
	CHECK_EQ_STR(verdict(follow, date("2025-02-29")), "bad_date");

	int64_t d = 12345;
	CHECK_EQ_INT(form_parse_date((const uint8_t *)"1970-01-01", 10, &d), 0);
	CHECK_EQ_INT(d, 0);
	/* 2000-02-29 is day 11016 (951782400 s), so March 1st is 11017. */
	CHECK_EQ_INT(form_parse_date((const uint8_t *)"2000-03-01", 10, &d), 0);
	CHECK_EQ_INT(d, 11017);
	CHECK_EQ_INT(form_parse_date((const uint8_t *)"1969-12-31", 10, &d), 0);
	CHECK_EQ_INT(d, -1);
	CHECK_EQ_INT(form_parse_date((const uint8_t *)"2025-06-15", 10, &d), 0);
	CHECK_EQ_INT(d, TODAY);
	d = 12345;
	CHECK_EQ_INT(form_parse_date((const uint8_t *)"2025-02-29", 10, &d), -EINVAL);
	CHECK_EQ_INT(d, 12345);
	/* The length given counts: a valid date cut short is not one. */
	CHECK_EQ_INT(form_parse_date((const uint8_t *)"2025-06-15", 9, &d), -EINVAL);
}

static void test_check_choices(void)
{
	const struct form_field *county = fld(V1, 53), *viol = fld(V1, 59);
	CHECK_EQ_STR(verdict(county, choice("001")), "ok");
	CHECK_EQ_STR(verdict(county, choice("047")), "ok");
	CHECK_EQ_STR(verdict(county, choice("048")), "choice_not_in_vocabulary");
	CHECK_EQ_STR(verdict(county, choice("Mombasa")), "choice_not_in_vocabulary");
	CHECK_EQ_STR(verdict(county, choice("")), "choice_not_in_vocabulary");
	CHECK_EQ_STR(verdict(county, choice("0470")), "choice_not_in_vocabulary");

	const char *one[] = {"torture"};
	const char *two[] = {"torture", "other"};
	const char *rep[] = {"torture", "other", "torture"};
	const char *out[] = {"torture", "nonsense"};
	const char *v2only[] = {"forced_eviction"};
	CHECK_EQ_STR(verdict(viol, choices(1, one)), "ok");
	CHECK_EQ_STR(verdict(viol, choices(2, two)), "ok");
	CHECK_EQ_STR(verdict(viol, choices(3, rep)), "repeated_choice");
	CHECK_EQ_STR(verdict(viol, choices(2, out)), "choice_not_in_vocabulary");
	CHECK_EQ_STR(verdict(viol, choices(1, v2only)), "choice_not_in_vocabulary");
	CHECK_EQ_STR(verdict(fld(V2, 59), choices(1, v2only)), "ok");
	CHECK_EQ_STR(verdict(viol, choice("torture")), "wrong_type");
	/* Every code of the vocabulary at once is fine. */
	const char *all[64];
	CHECK(viol->n_choices <= SH_ARRAY_SIZE(all));
	for (size_t i = 0; i < viol->n_choices; i++)
		all[i] = viol->choices[i].code;
	CHECK_EQ_STR(verdict(viol, choices(viol->n_choices, all)), "ok");
}

/* form_choice finds every code of every vocabulary of every form loaded,
 * and nothing that differs from one by a byte, a byte less, a byte more
 * or a NUL after it. */
static void test_choice_lookup(void)
{
	size_t found = 0;
	for (size_t fi = 0; fi < form_registry_count(REG); fi++) {
		const struct form *f = form_registry_at(REG, fi);
		for (size_t k = 0; k < f->n_fields; k++) {
			const struct form_field *fd = &f->fields[k];
			for (size_t c = 0; c < fd->n_choices; c++) {
				const char *code = fd->choices[c].code;
				size_t len = strlen(code);
				char buf[80];
				CHECK(len + 2 <= sizeof(buf));
				CHECK(form_choice(fd, code, len) == &fd->choices[c]);
				memcpy(buf, code, len + 1);
				CHECK(form_choice(fd, buf, len + 1) == NULL); /* NUL after it */
				buf[len] = 'x';
				buf[len + 1] = 0;
				CHECK(!form_choice(fd, buf, len + 1) ||
				      !strcmp(form_choice(fd, buf, len + 1)->code, buf));
				CHECK(!form_choice(fd, code, len - 1) ||
				      strlen(form_choice(fd, code, len - 1)->code) == len - 1);
				for (size_t i = 0; i < len; i++) {
					memcpy(buf, code, len + 1);
					buf[i] ^= 0x20;
					const struct form_choice *o = form_choice(fd, buf, len);
					CHECK(!o || !strcmp(o->code, buf));
					buf[i] = 0;
					CHECK(form_choice(fd, buf, len) == NULL);
				}
				found++;
			}
		}
	}
	CHECK(found > 100);
}

static void test_check_geo_attachment_cleared(void)
{
	const struct form_field *loc = fld(V1, 56), *files = fld(V1, 100);
	CHECK_EQ_STR(verdict(loc, geopoint(-1.2921, 36.8219)), "ok");
	CHECK_EQ_STR(verdict(loc, geopoint(90, -180)), "ok");
	CHECK_EQ_STR(verdict(loc, geopoint(91, 36.8)), "out_of_range");
	CHECK_EQ_STR(verdict(loc, geopoint(-90.5, 36.8)), "out_of_range");
	CHECK_EQ_STR(verdict(loc, geopoint(0, 180.5)), "out_of_range");
	CHECK_EQ_STR(verdict(loc, geopoint(NAN, 0)), "out_of_range");

	CHECK_EQ_STR(verdict(files, attachment(16, "image/jpeg", 10)), "ok");
	CHECK_EQ_STR(verdict(files, attachment(15, "image/jpeg", 10)), "bad_attachment");
	CHECK_EQ_STR(verdict(files, attachment(17, "image/jpeg", 10)), "bad_attachment");
	CHECK_EQ_STR(verdict(files, attachment(16, "image/\xff", 7)), "bad_attachment");
	/* Value field 10 holding bytes that are not an Attachment. */
	CHECK_EQ_STR(verdict(files, raw((const uint8_t[]){0x52, 2, 0x0a, 5}, 4)),
		     "malformed_value");

	/* Cleared: no member set, whatever the field's type. */
	const struct form_field *cleared_ok[] = {fld(V1, 1), fld(V1, 30), fld(V1, 35), loc, files};
	for (size_t i = 0; i < SH_ARRAY_SIZE(cleared_ok); i++) {
		Shahidi__V1__Value m = SHAHIDI__V1__VALUE__INIT;
		struct val v = pack(&m);
		CHECK_EQ_INT(v.n, 0);
		CHECK_EQ_STR(verdict(cleared_ok[i], v), "ok");
	}
}

static void test_malformed_values(void)
{
	const struct form_field *code = fld(V1, 30);
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0xff, 0xff}, 2)), "malformed_value");
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0x0a, 5, 'a', 'b'}, 4)), "malformed_value");
	/* Text (field 1) and integer (field 2) both set. */
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0x0a, 1, 'a', 0x10, 0x02}, 5)),
		     "malformed_value");
	/* Text sent with the wire type of an integer. */
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0x08, 0x01}, 2)), "malformed_value");
	/* A group. */
	CHECK_EQ_STR(verdict(code, raw((const uint8_t[]){0x0b, 0x0c}, 2)), "malformed_value");
}

static void test_value_parse_skips_unknown(void)
{
	/* Field 15 (a member a newer app knows), as a varint and as bytes,
	 * around the text member "hi". */
	const uint8_t before[] = {0x78, 0x01, 0x0a, 2, 'h', 'i'};
	const uint8_t after[] = {0x0a, 2, 'h', 'i', 0x7a, 3, 'x', 'y', 'z'};
	const struct {
		const uint8_t *p;
		size_t n;
	} cases[] = {{before, sizeof(before)}, {after, sizeof(after)}};
	for (size_t i = 0; i < SH_ARRAY_SIZE(cases); i++) {
		struct val v = raw(cases[i].p, cases[i].n);
		struct form_value fv;
		CHECK_EQ_INT(form_value_parse(v.p, v.n, &fv), 0);
		CHECK_EQ_INT(fv.kind, FT_TEXT);
		CHECK_EQ_INT(fv.str_len, 2);
		CHECK(!memcmp(fv.str, "hi", 2));
		CHECK(fv.str >= v.p && fv.str + 2 <= v.p + v.n);
		CHECK_EQ_STR(verdict(fld(V1, 30), v), "ok");
	}
	/* Only an unknown member: nothing we know is set, so cleared. */
	struct form_value fv;
	CHECK_EQ_INT(form_value_parse((const uint8_t[]){0x78, 0x01}, 2, &fv), 0);
	CHECK_EQ_INT(fv.kind, FT_NONE);

	/* Zigzag: sint64 -3 is 5 on the wire. */
	CHECK_EQ_INT(form_value_parse((const uint8_t[]){0x10, 0x05}, 2, &fv), 0);
	CHECK_EQ_INT(fv.kind, FT_INTEGER);
	CHECK_EQ_INT(fv.i, -3);
}

static void test_utf8(void)
{
	static const struct {
		const char *s;
		size_t n;
		bool ok;
	} cases[] = {
		{"Murang'a", 8, true},
		{"Nyeri \xe2\x80\x93 ", 10, true},           /* U+2013 en dash */
		{"\xf0\x9f\x98\x80", 4, true},               /* U+1F600 */
		{"\xf0\x9f\x98\x80", 3, false},              /* cut short */
		{"\xc3\xa9", 2, true},                       /* U+00E9 */
		{"\xf4\x8f\xbf\xbf", 4, true},               /* U+10FFFF */
		{"\xf4\x90\x80\x80", 4, false},              /* U+110000 */
		{"\xed\x9f\xbf", 3, true},                   /* U+D7FF */
		{"\xee\x80\x80", 3, true},                   /* U+E000 */
		{"\xed\xa0\x80", 3, false},                  /* U+D800 */
		{"\xed\xbf\xbf", 3, false},                  /* U+DFFF */
		{"\xc0\x80", 2, false},                      /* overlong NUL */
		{"\xe0\x80\xaf", 3, false},                  /* overlong '/' */
		{"\xf0\x80\x80\xaf", 4, false},              /* overlong '/' */
		{"\x80", 1, false},                          /* lone continuation */
		{"\xe2\x28\xa1", 3, false},                  /* bad continuation */
		{"\xf8\x88\x80\x80\x80", 5, false},          /* 5-byte form */
		{"a\0b", 3, false},
		{"", 0, true},
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(cases); i++) {
		struct val v = raw(cases[i].s, cases[i].n);
		if (form_utf8_ok(v.p, v.n) != cases[i].ok)
			fprintf(stderr, "case %zu\n", i);
		CHECK_EQ_INT(form_utf8_ok(v.p, v.n), cases[i].ok);
		free(v.p);
	}
	/* The length given is the end, even when the bytes after it would
	 * complete the sequence (ASan aside, this catches a read past len). */
	const uint8_t smile[] = {'o', 'k', 0xf0, 0x9f, 0x98, 0x80};
	CHECK(form_utf8_ok(smile, 6));
	for (size_t n = 3; n < 6; n++)
		CHECK(!form_utf8_ok(smile, n));
	CHECK(form_utf8_ok(smile, 2));
	/* Plain ASCII is read eight bytes at a time: a NUL, a lone
	 * continuation byte or a valid sequence at every position of every
	 * length, before, inside and after the 8-byte steps. */
	uint8_t buf[41];
	for (size_t n = 1; n <= 40; n++)
		for (size_t at = 0; at < n; at++) {
			memset(buf, 'a', n);
			CHECK(form_utf8_ok(buf, n));
			buf[at] = 0;
			CHECK(!form_utf8_ok(buf, n));
			buf[at] = 0x80;
			CHECK(!form_utf8_ok(buf, n));
			buf[at] = 0x7f;
			CHECK(form_utf8_ok(buf, n));
			if (at + 1 < n) {
				buf[at] = 0xc3;
				buf[at + 1] = 0xa9; /* U+00E9 */
				CHECK(form_utf8_ok(buf, n));
				CHECK(!form_utf8_ok(buf, at + 1)); /* cut inside it */
			}
		}
}

/*
 * Regression tests for three bugs once in form.c, now fixed. Each asserts
 * the documented behaviour; the comment above it says what the bug was
 * (line numbers are those of the time).
 */

/* Was (form.c:736): the attachment check measured media_type with strlen(), so
 * a NUL hid whatever followed it (bytes that are not UTF-8, or any
 * length past the 100-byte cap) and the value was stored as sent. */
static void test_attachment_media_type_with_nul_refused(void)
{
	const struct form_field *files = fld(V1, 100);
	CHECK_EQ_STR(verdict(files, attachment(16, "image/jpeg\0\xff\xfe", 13)), "bad_attachment");
}

/* Was (form.c:703-710): a CHOICES value may hold every code of its
 * vocabulary, but codes were tracked in a 64-entry array and the 65th
 * distinct, valid code was refused as too_many_choices ("more codes than
 * the vocabulary has"), which it is not. */
static void test_choices_more_than_64_codes(void)
{
	struct buf j = {0};
	CHECK_EQ_INT(buf_puts(&j, "{\"form_id\":\"t\",\"version\":1,\"fields\":[{\"number\":1,"
				  "\"name\":\"a\",\"type\":\"choices\",\"vocabulary\":\"v\"}],"
				  "\"vocabularies\":{\"v\":["), 0);
	for (int i = 0; i < 70; i++)
		CHECK_EQ_INT(buf_printf(&j, "%s[\"c%d\",\"C%d\"]", i ? "," : "", i, i), 0);
	CHECK_EQ_INT(buf_puts(&j, "]}}"), 0);
	struct form_registry *reg;
	char err[256] = "";
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	CHECK_EQ_INT(form_registry_add_json(reg, (const char *)j.data, j.len, "t.json", err,
					    sizeof(err)), 0);
	const struct form_field *fd = fld(form_registry_find(reg, "t", 1), 1);
	CHECK_EQ_INT(fd->n_choices, 70);
	const char *codes[70];
	for (size_t i = 0; i < 70; i++)
		codes[i] = fd->choices[i].code;
	CHECK_EQ_STR(verdict(fd, choices(64, codes)), "ok");
	CHECK_EQ_STR(verdict(fd, choices(70, codes)), "ok");
	form_registry_free(reg);
	buf_free(&j);
}

/* Was (form.c:281): form_registry_add_path() loaded files with
 * json_load_file(.., 0, ..), without JSON_REJECT_DUPLICATES, and passed on
 * the re-dumped text: a key given twice, which form_registry_add_json()
 * refuses (see test_bad_definitions), was silently resolved to its last
 * value. */
static void test_path_refuses_duplicate_keys(void)
{
	char dir[256], path[300], err[256] = "";
	tu_tmpdir(dir);
	snprintf(path, sizeof(path), "%s/t.json", dir);
	FILE *f = fopen(path, "w");
	CHECK(f);
	fputs(F("{\"number\":1,\"name\":\"a\",\"type\":\"text\",\"type\":\"date\"}"), f);
	CHECK_EQ_INT(fclose(f), 0);
	struct form_registry *reg;
	CHECK_EQ_INT(form_registry_new(&reg), 0);
	int r = form_registry_add_path(reg, path, err, sizeof(err));
	form_registry_free(reg);
	tu_rmrf(dir);
	CHECK_EQ_INT(r, -EINVAL);
}

int main(void)
{
	REG = tu_forms(true);
	V1 = form_registry_find(REG, "incident_report", 1);
	V2 = form_registry_find(REG, "incident_report", 2);
	CHECK(V1 && V2);

	RUN(test_builtin_v1);
	RUN(test_builtin_v3_groups);
	RUN(test_v2_fixture);
	RUN(test_bad_definitions);
	RUN(test_pack);
	RUN(test_check_text);
	RUN(test_check_numbers);
	RUN(test_check_dates);
	RUN(test_check_choices);
	RUN(test_choice_lookup);
	RUN(test_check_geo_attachment_cleared);
	RUN(test_malformed_values);
	RUN(test_value_parse_skips_unknown);
	RUN(test_utf8);
	RUN(test_attachment_media_type_with_nul_refused);
	RUN(test_choices_more_than_64_codes);
	RUN(test_path_refuses_duplicate_keys);
	form_registry_free(REG);
	return 0;
}
