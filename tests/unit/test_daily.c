/* Daily push counts (daily.h): added up per county and server day, read
 * back through a window of days and a county scope. Counties outside the
 * scope, days before the window and days after it (a server clock set
 * back) sit between the counted keys, so every jump of the reader is
 * taken. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "common.h"
#include "daily.h"
#include "store.h"
#include "testutil.h"

#define DAY DAILY_MS

static json_t *row(json_t *j, const char *county)
{
	json_t *c = json_object_get(j, "counties");
	for (size_t i = 0; i < json_array_size(c); i++)
		if (!strcmp(json_string_value(json_object_get(json_array_get(c, i), "county")), county))
			return json_array_get(c, i);
	return NULL;
}

static long long at(json_t *r, const char *k, size_t i)
{
	return json_integer_value(json_array_get(json_object_get(r, k), i));
}

int main(void)
{
	char dir[256];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	const uint64_t today = 20000 * DAY + 5000; /* 2024-10-04, in the day */
	struct store_txn *t;
	json_t *j;

	fprintf(stderr, "-- an empty table: no counties\n");
	struct scope all = scope_all();
	CHECK_EQ_INT(daily_collect(s, &all, today, 30, &j), 0);
	CHECK_EQ_INT(json_array_size(json_object_get(j, "counties")), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "to")), "2024-10-04");
	CHECK_EQ_STR(json_string_value(json_object_get(j, "from")), "2024-09-05");
	json_decref(j);

	fprintf(stderr, "-- counted per county and day, summed within a day\n");
	CHECK_EQ_INT(store_begin(s, true, &t), 0);
	struct {
		const char *county;
		int64_t day; /* relative to today */
		unsigned applied, rejected;
	} pushes[] = {
		{"001", -40, 1, 0}, {"001", 0, 2, 1}, {"001", 0, 3, 0}, {"001", 2, 9, 9},
		{"030", -1, 4, 0},  {"042", -29, 5, 0}, {"042", -30, 6, 0}, {"047", -3, 7, 0},
		{"047", 0, 1, 0},   {"", 0, 1, 0},
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(pushes); i++)
		CHECK_EQ_INT(daily_note(t, pushes[i].county, (uint64_t)((int64_t)today + pushes[i].day * (int64_t)DAY),
					pushes[i].applied, pushes[i].rejected),
			     0);
	CHECK_EQ_INT(store_commit(t), 0);

	CHECK_EQ_INT(daily_collect(s, &all, today, 30, &j), 0);
	json_t *c = json_object_get(j, "counties");
	CHECK_EQ_INT(json_array_size(c), 5); /* "", 001, 030, 042, 047 in key order */
	CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(c, 0), "county")), "");
	json_t *r = row(j, "001");
	CHECK(r);
	CHECK_EQ_INT(at(r, "batches", 29), 2);
	CHECK_EQ_INT(at(r, "applied", 29), 5);
	CHECK_EQ_INT(at(r, "rejected", 29), 1);
	CHECK_EQ_INT(json_integer_value(json_object_get(r, "total")), 2); /* not day -40 nor +2 */
	CHECK_EQ_INT(json_array_size(json_object_get(r, "batches")), 30);
	r = row(j, "042");
	CHECK(r);
	CHECK_EQ_INT(at(r, "batches", 0), 1); /* day -29 is the window's first; -30 is not in it */
	CHECK_EQ_INT(json_integer_value(json_object_get(r, "total")), 1);
	CHECK_EQ_INT(at(row(j, "047"), "batches", 26), 1);
	CHECK_EQ_INT(at(row(j, "047"), "batches", 29), 1);
	CHECK_EQ_INT(at(row(j, "030"), "applied", 28), 4);
	json_decref(j);

	fprintf(stderr, "-- a coordinator's scope: its counties only\n");
	struct scope sc;
	CHECK_EQ_INT(scope_parse("042,047", &sc, NULL, 0), 0);
	CHECK_EQ_INT(daily_collect(s, &sc, today, 30, &j), 0);
	c = json_object_get(j, "counties");
	CHECK_EQ_INT(json_array_size(c), 2);
	CHECK(row(j, "042") && row(j, "047") && !row(j, "001") && !row(j, ""));
	json_decref(j);

	fprintf(stderr, "-- other windows\n");
	CHECK_EQ_INT(daily_collect(s, &all, today, 1, &j), 0);
	CHECK_EQ_INT(json_array_size(json_object_get(j, "counties")), 3); /* "", 001, 047 */
	json_decref(j);
	CHECK_EQ_INT(daily_collect(s, &all, today, 366, &j), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(row(j, "001"), "total")), 3);
	CHECK_EQ_INT(json_integer_value(json_object_get(row(j, "042"), "total")), 2);
	json_decref(j);
	CHECK_EQ_INT(daily_collect(s, &all, today, 0, &j), -EINVAL);
	CHECK_EQ_INT(daily_collect(s, &all, today, 367, &j), -EINVAL);

	fprintf(stderr, "-- kept across a reopen\n");
	store_close(s);
	s = tu_store_open(dir, NULL);
	CHECK_EQ_INT(daily_collect(s, &all, today, 30, &j), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(row(j, "001"), "total")), 2);
	json_decref(j);
	store_close(s);
	tu_rmrf(dir);
	return 0;
}
