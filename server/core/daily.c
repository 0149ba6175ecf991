#include "daily.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "store_int.h"

#define KEY_LEN 7 /* county (3) | be32 day */
#define VAL_LEN 24

static void daily__key(uint8_t k[KEY_LEN], const char *county, uint32_t day)
{
	memset(k, 0, 3);
	if (county)
		memcpy(k, county, strnlen(county, 3));
	sh_put_be32(k + 3, day);
}

int daily_note(struct store_txn *t, const char *county, uint64_t now_ms, uint64_t applied,
	       uint64_t rejected)
{
	uint8_t k[KEY_LEN], v[VAL_LEN] = {0};
	MDB_val old;
	daily__key(k, county, (uint32_t)(now_ms / DAILY_MS));
	int r = st_get_raw(t, DB_DAYS, k, sizeof(k), &old);
	if (r == 0 && old.mv_size == VAL_LEN)
		memcpy(v, old.mv_data, VAL_LEN);
	else if (r < 0 && r != -ENOENT)
		return r;
	sh_put_be64(v, sh_get_be64(v) + 1);
	sh_put_be64(v + 8, sh_get_be64(v + 8) + applied);
	sh_put_be64(v + 16, sh_get_be64(v + 16) + rejected);
	return st_put_raw(t, DB_DAYS, k, sizeof(k), v, sizeof(v), 0);
}

static void daily__date(uint32_t day, char out[11])
{
	time_t s = (time_t)day * 86400;
	struct tm tm;
	gmtime_r(&s, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

/* One county's row: three arrays of n zeros. NULL when out of memory. */
static json_t *daily__row(const uint8_t code[3], unsigned n)
{
	char c[4] = {0};
	memcpy(c, code, 3);
	json_t *b = json_array(), *a = json_array(), *x = json_array();
	for (unsigned i = 0; b && a && x && i < n; i++) {
		json_array_append_new(b, json_integer(0));
		json_array_append_new(a, json_integer(0));
		json_array_append_new(x, json_integer(0));
	}
	json_t *row = b && a && x ? json_pack("{s:s,s:o,s:o,s:o,s:I}", "county", c, "batches", b,
					      "applied", a, "rejected", x, "total", (json_int_t)0)
				  : NULL;
	if (!row) {
		json_decref(b);
		json_decref(a);
		json_decref(x);
	}
	return row;
}

static void daily__add(json_t *arr, size_t i, uint64_t n)
{
	json_int_t was = json_integer_value(json_array_get(arr, i));
	json_array_set_new(arr, i, json_integer(was + (json_int_t)n));
}

int daily_collect(struct store *s, const struct scope *scope, uint64_t now_ms, unsigned days,
		  json_t **ret)
{
	if (days < 1 || days > DAILY_MAX_DAYS)
		return -EINVAL;
	uint32_t to = (uint32_t)(now_ms / DAILY_MS), from = to - (days - 1);
	char dfrom[11], dto[11];
	daily__date(from, dfrom);
	daily__date(to, dto);
	json_t *rows = json_array(), *row = NULL;
	struct store_txn *t = NULL;
	MDB_cursor *cur = NULL;
	int r = -ENOMEM;
	if (!rows)
		goto out;
	if ((r = store_begin(s, false, &t)) < 0)
		goto out;
	if (s->days_absent)
		goto done;
	if ((r = st_lmdb_err(mdb_cursor_open(t->txn, s->dbi[DB_DAYS], &cur))) < 0)
		goto out;
	/* County by county: jump to its first day in the window, read to the
	 * last, then jump past it. The table holds every day ever counted. */
	uint8_t k[KEY_LEN] = {0};
	MDB_val key = val_of(k, sizeof(k)), val;
	int rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	while (rc == 0) {
		if (key.mv_size != KEY_LEN) {
			r = -EIO;
			goto out;
		}
		const uint8_t *kp = key.mv_data;
		uint8_t code[3];
		memcpy(code, kp, 3);
		uint32_t day = sh_get_be32(kp + 3);
		char c[4] = {0};
		memcpy(c, code, 3);
		bool next_county = day > to || !scope_has(scope, c);
		if (!next_county && day < from) {
			daily__key(k, c, from);
			key = val_of(k, sizeof(k));
			rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
			continue;
		}
		if (next_county) {
			/* the first key after this county's last possible one */
			memcpy(k, code, 3);
			memset(k + 3, 0xff, 4);
			key = val_of(k, sizeof(k));
			rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
			if (rc == 0 && !memcmp(key.mv_data, k, KEY_LEN))
				rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
			continue;
		}
		if (val.mv_size != VAL_LEN) {
			r = -EIO;
			goto out;
		}
		const json_t *last = json_array_get(rows, json_array_size(rows) - 1);
		if (!last || strcmp(json_string_value(json_object_get(last, "county")), c)) {
			if (!(row = daily__row(code, days)) || json_array_append_new(rows, row) < 0) {
				row = NULL;
				r = -ENOMEM;
				goto out;
			}
		}
		const uint8_t *vp = val.mv_data;
		size_t i = day - from;
		daily__add(json_object_get(row, "batches"), i, sh_get_be64(vp));
		daily__add(json_object_get(row, "applied"), i, sh_get_be64(vp + 8));
		daily__add(json_object_get(row, "rejected"), i, sh_get_be64(vp + 16));
		json_object_set_new(row, "total",
				    json_integer(json_integer_value(json_object_get(row, "total")) +
						 (json_int_t)sh_get_be64(vp)));
		rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
	}
	if (rc != MDB_NOTFOUND) {
		r = st_lmdb_err(rc);
		goto out;
	}
done:
	*ret = json_pack("{s:i,s:s,s:s,s:o}", "days", (int)days, "from", dfrom, "to", dto,
			 "counties", rows);
	rows = NULL;
	r = *ret ? 0 : -ENOMEM;
out:
	if (cur)
		mdb_cursor_close(cur);
	if (t)
		store_abort(t);
	json_decref(rows);
	return r;
}
