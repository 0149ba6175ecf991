/* export_stat: column names made valid variable names for SPSS (64 bytes,
 * reserved words ALL AND BY ...) and Stata (32 bytes, reserved words, str#),
 * each new among the names given before. */
#include <string.h>

#include "check.h"
#include "export_stat.h"

static void name(enum export_format f, const char *in, char *const *used, size_t n,
		 const char *want)
{
	char out[65];
	export_stat_name(f, in, used, n, out);
	CHECK_EQ_STR(out, want);
}

static void test_valid_names_stay(void)
{
	name(EXPORT_DTA, "record_id", NULL, 0, "record_id");
	name(EXPORT_SAV, "incident_location_latitude", NULL, 0, "incident_location_latitude");
}

static void test_characters_and_first_letter(void)
{
	name(EXPORT_DTA, "a-b.c d", NULL, 0, "a_b_c_d");
	name(EXPORT_SAV, "1st_visit", NULL, 0, "v1st_visit");
	name(EXPORT_DTA, "_n", NULL, 0, "v_n");
	/* a letter outside ASCII is not one for either format */
	name(EXPORT_SAV, "\xc3\xa9tat", NULL, 0, "v__tat");
}

static void test_reserved_words(void)
{
	name(EXPORT_DTA, "in", NULL, 0, "in_");
	name(EXPORT_DTA, "str80", NULL, 0, "str80_");
	name(EXPORT_DTA, "strL", NULL, 0, "strL_");
	name(EXPORT_DTA, "string", NULL, 0, "string");
	name(EXPORT_SAV, "with", NULL, 0, "with_");
	name(EXPORT_SAV, "By", NULL, 0, "By_");
	name(EXPORT_SAV, "in", NULL, 0, "in"); /* Stata's, not SPSS's */
	/* Stata: the yes/no value label's name, which a choice's would take */
	name(EXPORT_DTA, "yesno", NULL, 0, "yesno_");
}

static void test_length_and_collisions(void)
{
	const char *longname = "perpetrator_identifiers_as_written_by_the_paralegal_on_the_day";
	char out[65];
	export_stat_name(EXPORT_DTA, longname, NULL, 0, out);
	CHECK_EQ_INT(strlen(out), 32);
	CHECK(!strncmp(out, longname, 32));
	/* the next one cut to the same 32 bytes is made new */
	char *used[] = {out};
	name(EXPORT_DTA, "perpetrator_identifiers_as_written_by_someone_else", used, 1,
	     "perpetrator_identifiers_as_wri_2");
	export_stat_name(EXPORT_SAV, longname, NULL, 0, out);
	CHECK_EQ_STR(out, longname); /* 62 bytes: SPSS keeps it */
	/* SPSS names differ in more than case */
	char up[] = "STATUS", *u2[] = {up};
	name(EXPORT_SAV, "status", u2, 1, "status_2");
	char s2[] = "status_2", *u3[] = {up, s2};
	name(EXPORT_SAV, "status", u3, 2, "status_3");
}

int main(void)
{
	RUN(test_valid_names_stay);
	RUN(test_characters_and_first_letter);
	RUN(test_reserved_words);
	RUN(test_length_and_collisions);
	return 0;
}
