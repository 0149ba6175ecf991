/* Values and times as people and the API read and write them: what the
 * office's resolutions encode (render_value_encode) reads back the same
 * (render_value_json, render_value_text), and times parse and print in
 * UTC. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "render.h"
#include "testutil.h"

static const struct form_field *field(const struct form *f, const char *name)
{
	for (size_t i = 0; i < f->n_fields; i++)
		if (!strcmp(f->fields[i].name, name))
			return &f->fields[i];
	fprintf(stderr, "no field %s\n", name);
	exit(1);
}

/* encode j for fd, then read it back as JSON: equal to j; as text: text */
static void roundtrip(const struct form_field *fd, json_t *j, const char *text)
{
	struct buf b = {0}, t = {0};
	char err[200];
	CHECK_EQ_INT(render_value_encode(fd, j, &b, err, sizeof(err)), 0);
	json_t *back = render_value_json(fd, b.data, b.len);
	CHECK(back && json_equal(back, j));
	CHECK_EQ_INT(render_value_text(fd, b.data, b.len, true, &t), 0);
	buf_putc(&t, 0);
	CHECK_EQ_STR((const char *)t.data, text);
	json_decref(back);
	json_decref(j);
	buf_free(&b);
	buf_free(&t);
}

static void test_values(void)
{
	struct form_registry *reg = tu_forms(false);
	const struct form *f = form_registry_find(reg, "incident_report", 1);
	CHECK(f);
	roundtrip(field(f, "incident_county"), json_string("047"), "Nairobi City");
	roundtrip(field(f, "consent_documentation"), json_true(), "yes");
	roundtrip(field(f, "consent_date"), json_string("2026-01-02"), "2026-01-02");
	/* the wrong JSON type for the field is refused, with a reason */
	struct buf b = {0};
	char err[200] = "";
	json_t *n = json_integer(5);
	CHECK_EQ_INT(render_value_encode(field(f, "consent_documentation"), n, &b, err, sizeof(err)),
		     -EINVAL);
	CHECK(err[0]);
	json_decref(n);
	buf_free(&b);
	CHECK_EQ_STR(render_county_name(f, "047"), "Nairobi City");
	CHECK_EQ_STR(render_county_name(f, "999"), "999");
	form_registry_free(reg);
}

static void test_times(void)
{
	char buf[32];
	uint64_t ms = 0;
	render_time_ms(1700000000123ull, buf);
	CHECK_EQ_STR(buf, "2023-11-14T22:13:20.123Z");
	CHECK_EQ_INT(render_parse_time("2023-11-14T22:13:20", &ms), 0);
	CHECK_EQ_INT(ms, 1700000000000ull);
	CHECK_EQ_INT(render_parse_time("2023-11-14", &ms), 0);
	CHECK_EQ_INT(ms, 1699920000000ull);
	CHECK_EQ_INT(render_parse_time("1700000000123", &ms), 0);
	CHECK_EQ_INT(ms, 1700000000123ull);
	CHECK_EQ_INT(render_parse_time("2023-13-01", &ms), -EINVAL);
	CHECK_EQ_INT(render_parse_time("yesterday", &ms), -EINVAL);
	CHECK_EQ_INT(render_parse_time("", &ms), -EINVAL);
}

int main(void)
{
	RUN(test_values);
	RUN(test_times);
	return 0;
}
