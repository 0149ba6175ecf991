/* County scopes: the one answer to "may this token see this county", and
 * the numbering of counties it rests on. */
#include <errno.h>

#include "check.h"
#include "form.h"
#include "scope.h"
#include "shahidi.pb-c.h"
#include "testutil.h"

/* The bits are the codes of the county vocabulary: every form's county
 * field holds exactly 001..SCOPE_COUNTIES, so every county fits. */
static void test_bits_are_the_county_vocabulary(void)
{
	struct form_registry *reg = tu_forms(true);
	size_t with_counties = 0;
	for (size_t i = 0; i < form_registry_count(reg); i++) {
		const struct form *f = form_registry_at(reg, i);
		if (!f->county_field)
			continue;
		with_counties++;
		CHECK_EQ_INT(f->county_field->n_choices, SCOPE_COUNTIES);
		for (size_t k = 0; k < f->county_field->n_choices; k++)
			CHECK_EQ_INT(scope_county_number(f->county_field->choices[k].code), (int)k + 1);
	}
	CHECK(with_counties > 0);
	form_registry_free(reg);
}

static void test_county_numbers(void)
{
	CHECK_EQ_INT(scope_county_number("001"), 1);
	CHECK_EQ_INT(scope_county_number("047"), 47);
	CHECK_EQ_INT(scope_county_number("000"), -EINVAL);
	CHECK_EQ_INT(scope_county_number("048"), -EINVAL);
	CHECK_EQ_INT(scope_county_number("47"), -EINVAL);
	CHECK_EQ_INT(scope_county_number("0470"), -EINVAL);
	CHECK_EQ_INT(scope_county_number("04a"), -EINVAL);
	CHECK_EQ_INT(scope_county_number(""), -EINVAL);
	CHECK_EQ_INT(scope_county_number(NULL), -EINVAL);
}

static void test_has(void)
{
	struct scope all = scope_all(), none = scope_none(), some = scope_none();
	CHECK(scope_has(&all, "042") && scope_has(&all, "") && scope_has(&all, NULL));
	CHECK(!scope_has(&none, "042") && !scope_has(&none, ""));
	CHECK_EQ_INT(scope_add(&some, "042"), 0);
	CHECK_EQ_INT(scope_add(&some, "047"), 0);
	CHECK_EQ_INT(scope_add(&some, "048"), -EINVAL);
	CHECK(scope_has(&some, "042") && scope_has(&some, "047"));
	CHECK(!scope_has(&some, "041") && !scope_has(&some, "001"));
	/* a record without a county is seen by those who see all only */
	CHECK(!scope_has(&some, "") && !scope_has(&some, NULL));
	CHECK(!scope_has(&some, "42"));
	/* history: any county the record has been in */
	CHECK(scope_has_any(&some, "001,047"));
	CHECK(scope_has_any(&some, "042"));
	CHECK(!scope_has_any(&some, "001,002"));
	CHECK(!scope_has_any(&some, ""));
	CHECK(scope_has_any(&all, ""));
}

static void test_parse_and_codes(void)
{
	struct scope s;
	char bad[16] = "", codes[SCOPE_COUNTIES][4];
	const char *ptrs[SCOPE_COUNTIES];
	CHECK_EQ_INT(scope_parse("047,042 001", &s, bad, sizeof(bad)), 0);
	CHECK_EQ_INT(scope_codes(&s, codes, ptrs), 3);
	CHECK_EQ_STR(codes[0], "001");
	CHECK_EQ_STR(ptrs[1], "042");
	CHECK_EQ_STR(codes[2], "047");
	CHECK_EQ_INT(scope_parse("042,999", &s, bad, sizeof(bad)), -EINVAL);
	CHECK_EQ_STR(bad, "999");
	struct scope all = scope_all();
	CHECK_EQ_INT(scope_codes(&all, codes, NULL), 0);
}

static void test_of_device(void)
{
	store_device_t d = SHAHIDI__STORE__V1__DEVICE__INIT;
	char *list[] = {"042", "047"};
	struct scope s;
	d.role = ROLE_ADMIN;
	d.county = "";
	s = scope_of_device(&d);
	CHECK(s.all);
	/* a coordinator enrolled without a county sees all */
	d.role = ROLE_COORDINATOR;
	s = scope_of_device(&d);
	CHECK(s.all);
	/* with one county: that one */
	d.county = "042";
	s = scope_of_device(&d);
	CHECK(!s.all && scope_has(&s, "042") && !scope_has(&s, "047"));
	/* with a list: the list */
	d.county = "";
	d.counties = list;
	d.n_counties = 2;
	s = scope_of_device(&d);
	CHECK(!s.all && scope_has(&s, "042") && scope_has(&s, "047") && !scope_has(&s, "041"));
	/* a phone: its scope is not what limits it */
	d.role = ROLE_DEVICE;
	s = scope_of_device(&d);
	CHECK(s.all);
}

/* Who sees the values of sensitive fields outside an export (a record's
 * history, the conflicts list) and may resolve their conflicts: an admin
 * and the CLI's user (who holds the data directory), nobody else. */
static void test_sensitive(void)
{
	store_device_t d = SHAHIDI__STORE__V1__DEVICE__INIT;
	char *list[] = {"042"};
	d.county = "";
	d.role = ROLE_ADMIN;
	CHECK(scope_of_device(&d).sensitive);
	d.role = ROLE_COORDINATOR; /* all counties (enrolled without one) */
	CHECK(scope_of_device(&d).all && !scope_of_device(&d).sensitive);
	d.county = "047";
	CHECK(!scope_of_device(&d).sensitive);
	d.counties = list;
	d.n_counties = 1;
	CHECK(!scope_of_device(&d).sensitive);
	d.role = ROLE_DEVICE;
	CHECK(!scope_of_device(&d).sensitive);
	d.role = ROLE_METRICS;
	CHECK(!scope_of_device(&d).sensitive);
	d.role = ROLE_ADMIN;
	d.revoked = true; /* its token no longer authenticates; still: */
	CHECK(scope_of_device(&d).sensitive);
	CHECK(scope_of_cli().all && scope_of_cli().sensitive);
	CHECK(!scope_all().sensitive && !scope_none().sensitive);
}

int main(void)
{
	RUN(test_bits_are_the_county_vocabulary);
	RUN(test_county_numbers);
	RUN(test_has);
	RUN(test_parse_and_codes);
	RUN(test_of_device);
	RUN(test_sensitive);
	return 0;
}
