/* Hybrid logical clocks and record ids: the two things that order and name
 * every write, so both must hold up when phones' clocks are wrong. */
#include <errno.h>

#include "check.h"
#include "common.h"
#include "hlc.h"
#include "uuid.h"

/* 2023-11-14T22:13:20.123Z: 1700000000 s is 19675 days and 80000 s after
 * the epoch; 19675 - 19358 (days before 2023) = day 317 of 2023, Nov 14. */
#define T0 1700000000123ull

static void test_tick_follows_wall_time(void)
{
	struct hlc c = {0};
	uint64_t a = hlc_tick(&c, T0);
	CHECK_EQ_INT(a, hlc_make(T0, 0));
	CHECK_EQ_INT(c.last, a);
	/* Wall time moves on: the counter starts again at 0. */
	hlc_tick(&c, T0);
	hlc_tick(&c, T0);
	uint64_t b = hlc_tick(&c, T0 + 5);
	CHECK_EQ_INT(b, hlc_make(T0 + 5, 0));
}

static void test_tick_increases_when_wall_time_stalls_or_goes_back(void)
{
	struct hlc c = {0};
	uint64_t prev = hlc_tick(&c, T0);
	/* Same ms: the counter counts. */
	for (uint32_t i = 1; i <= 3; i++) {
		uint64_t s = hlc_tick(&c, T0);
		CHECK(s > prev);
		CHECK_EQ_INT(hlc_ms(s), T0);
		CHECK_EQ_INT(s & HLC_COUNTER_MASK, i);
		prev = s;
	}
	/* The phone's clock is set back an hour: stamps still rise, and keep
	 * the ms they had instead of following the clock back. */
	for (int i = 0; i < 10; i++) {
		uint64_t s = hlc_tick(&c, T0 - 3600000 + (uint64_t)i);
		CHECK(s > prev);
		CHECK_EQ_INT(hlc_ms(s), T0);
		prev = s;
	}
}

static void test_counter_overflow_carries_into_ms(void)
{
	struct hlc c = {.last = hlc_make(T0, HLC_COUNTER_MASK - 1)};
	uint64_t a = hlc_tick(&c, T0);
	CHECK_EQ_INT(a & HLC_COUNTER_MASK, HLC_COUNTER_MASK);
	CHECK_EQ_INT(hlc_ms(a), T0);
	uint64_t b = hlc_tick(&c, T0);
	CHECK(b > a);
	CHECK_EQ_INT(hlc_ms(b), T0 + 1);
	CHECK_EQ_INT(b & HLC_COUNTER_MASK, 0);

	/* 70000 ticks in one wall ms cross the 16-bit counter at least once. */
	struct hlc d = {0};
	uint64_t prev = hlc_tick(&d, T0);
	for (int i = 0; i < 70000; i++) {
		uint64_t s = hlc_tick(&d, T0);
		CHECK(s > prev);
		prev = s;
	}
	CHECK_EQ_INT(hlc_ms(prev), T0 + 1);
	CHECK_EQ_INT(prev & HLC_COUNTER_MASK, 70000 - 65536);
}

static void test_receive_merges_within_skew(void)
{
	struct hlc c = {.max_skew_ms = 1000};
	hlc_tick(&c, T0);
	/* Exactly max_skew_ms ahead, with the counter high: still merged. */
	uint64_t remote = hlc_make(T0 + 1000, 7);
	CHECK(hlc_receive(&c, remote, T0));
	CHECK(c.last >= remote);
	uint64_t next = hlc_tick(&c, T0);
	CHECK(next > remote);

	/* A remote stamp behind the clock leaves it where it is. */
	uint64_t before = c.last;
	CHECK(hlc_receive(&c, hlc_make(T0 - 50, 3), T0));
	CHECK_EQ_INT(c.last, before);
}

static void test_receive_refuses_beyond_skew(void)
{
	struct hlc c = {.max_skew_ms = 1000};
	uint64_t mine = hlc_tick(&c, T0);
	CHECK(!hlc_receive(&c, hlc_make(T0 + 1001, 0), T0));
	CHECK_EQ_INT(c.last, mine);
	CHECK(!hlc_receive(&c, hlc_make(T0 + 86400000, 0), T0));
	CHECK_EQ_INT(c.last, mine);
	/* The clock was not dragged forward: the next tick is local time. */
	CHECK_EQ_INT(hlc_tick(&c, T0 + 1), hlc_make(T0 + 1, 0));
}

static void test_make_and_ms_roundtrip(void)
{
	const uint64_t ms[] = {0, 1, T0, (1ull << 48) - 1};
	for (size_t i = 0; i < SH_ARRAY_SIZE(ms); i++) {
		uint64_t s = hlc_make(ms[i], 0xabcd);
		CHECK_EQ_INT(hlc_ms(s), ms[i]);
		CHECK_EQ_INT(s & HLC_COUNTER_MASK, 0xabcd);
	}
	/* Stamps compare as integers: ms first, then the counter. */
	CHECK(hlc_make(T0, 0xffff) < hlc_make(T0 + 1, 0));
	CHECK(hlc_make(T0, 1) < hlc_make(T0, 2));
	/* The counter is masked, never spills into the ms. */
	CHECK_EQ_INT(hlc_make(T0, 0x10005), hlc_make(T0, 5));
}

static void test_fmt(void)
{
	char buf[40];
	hlc_fmt(hlc_make(0, 0), buf, sizeof(buf));
	CHECK_EQ_STR(buf, "1970-01-01T00:00:00.000Z+0");
	hlc_fmt(hlc_make(T0, 5), buf, sizeof(buf));
	CHECK_EQ_STR(buf, "2023-11-14T22:13:20.123Z+5");
	/* 951782400 s = 11016 days: 2000-02-29 (a leap day, 400-year rule). */
	hlc_fmt(hlc_make(951782400000ull + 86399999, 65535), buf, sizeof(buf));
	CHECK_EQ_STR(buf, "2000-02-29T23:59:59.999Z+65535");
}

static const uint8_t ID[UUID_LEN] = {0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x7a, 0xbc,
				     0x9d, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab};
#define ID_STR "018bcfe5-6800-7abc-9def-0123456789ab"

static void test_uuid_fmt_parse(void)
{
	char s[UUID_STR_LEN + 1];
	uint8_t id[UUID_LEN];
	uuid_fmt(ID, s);
	CHECK_EQ_STR(s, ID_STR);
	CHECK_EQ_INT(uuid_parse(s, id), 0);
	CHECK(!memcmp(id, ID, UUID_LEN));

	memset(id, 0, sizeof(id));
	CHECK_EQ_INT(uuid_parse("018BCFE5-6800-7ABC-9DEF-0123456789AB", id), 0);
	CHECK(!memcmp(id, ID, UUID_LEN));
	memset(id, 0, sizeof(id));
	CHECK_EQ_INT(uuid_parse("018bcfe568007abc9def0123456789ab", id), 0);
	CHECK(!memcmp(id, ID, UUID_LEN));
}

static void test_uuid_parse_refuses(void)
{
	static const char *const bad[] = {
		"",
		"018bcfe5-6800-7abc-9def-0123456789a",    /* 35 */
		"018bcfe5-6800-7abc-9def-0123456789abc",  /* 37 */
		"018bcfe568007abc9def0123456789a",         /* 31 */
		"018bcfe568007abc9def0123456789abc",       /* 33 */
		"018bcfe5-6800-7abc-9def-0123456789ag",   /* not hex */
		"018bcfe5 6800-7abc-9def-0123456789ab",   /* space for a dash */
		"018bcfe56-800-7abc-9def-0123456789ab",   /* dash one place late */
		"018bcfe-56800-7abc-9def-0123456789ab",   /* one place early */
		"018bcfe5-6800-7abc-9def0-123456789ab",
		"018bcfe5-6800-7abc-9def-0123456789-b",   /* extra dash */
		"018bcfe5-6800-7abc-9def-01234567-9ab",
		"{18bcfe5-6800-7abc-9def-0123456789ab}",
		"018bcfe568007abc9def-123456789ab",        /* 32 but with a dash */
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(bad); i++) {
		uint8_t id[UUID_LEN];
		memset(id, 0x5a, sizeof(id));
		if (uuid_parse(bad[i], id) != -EINVAL) {
			fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
			CHECK(0);
		}
		/* ret_id is written only on success. */
		for (int k = 0; k < UUID_LEN; k++)
			CHECK_EQ_INT(id[k], 0x5a);
	}
	uint8_t id[UUID_LEN];
	CHECK_EQ_INT(uuid_parse(NULL, id), -EINVAL);
}

static void test_uuid_is_nil(void)
{
	uint8_t id[UUID_LEN] = {0};
	CHECK(uuid_is_nil(id));
	CHECK_EQ_INT(uuid_parse("00000000-0000-0000-0000-000000000000", id), 0);
	CHECK(uuid_is_nil(id));
	/* Any one byte set, the first or the last, makes it non-nil. */
	id[UUID_LEN - 1] = 1;
	CHECK(!uuid_is_nil(id));
	id[UUID_LEN - 1] = 0;
	id[0] = 0x80;
	CHECK(!uuid_is_nil(id));
}

static void test_uuid_v7(void)
{
	uint8_t rnd[10], id[UUID_LEN];
	memset(rnd, 0xff, sizeof(rnd));
	uuid_v7(T0, rnd, id);
	/* 48-bit ms big-endian: T0 = 0x018bcfe5687b. */
	const uint8_t ms_be[6] = {0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b};
	CHECK(!memcmp(id, ms_be, 6));
	CHECK_EQ_INT(id[6] >> 4, 7);      /* version */
	CHECK_EQ_INT(id[8] >> 6, 2);      /* variant 10 */
	CHECK_EQ_INT(id[6] & 0x0f, 0x0f); /* random bits kept around them */
	CHECK_EQ_INT(id[8] & 0x3f, 0x3f);
	CHECK(!memcmp(id + 9, rnd + 3, 7));

	/* All-zero random bits: version and variant still set. */
	memset(rnd, 0, sizeof(rnd));
	uuid_v7(T0, rnd, id);
	CHECK_EQ_INT(id[6], 0x70);
	CHECK_EQ_INT(id[8], 0x80);
	CHECK(!uuid_is_nil(id));

	/* Ids made later sort later, whatever their random bits: the store's
	 * index grows at its right edge. */
	uint8_t prev[UUID_LEN];
	memset(rnd, 0xff, sizeof(rnd));
	uuid_v7(T0, rnd, prev);
	for (uint64_t ms = T0 + 1; ms < T0 + 300; ms++) {
		for (size_t k = 0; k < sizeof(rnd); k++)
			rnd[k] = (uint8_t)(ms * 31 + k * 17);
		uuid_v7(ms, rnd, id);
		CHECK(memcmp(prev, id, UUID_LEN) < 0);
		memcpy(prev, id, UUID_LEN);
	}
	/* A byte boundary in the ms: 0x..ff -> 0x..100 carries into byte 4. */
	memset(rnd, 0xff, sizeof(rnd));
	uuid_v7(0x0100000000ffull, rnd, prev);
	memset(rnd, 0, sizeof(rnd));
	uuid_v7(0x010000000100ull, rnd, id);
	CHECK(memcmp(prev, id, UUID_LEN) < 0);
}

int main(void)
{
	RUN(test_tick_follows_wall_time);
	RUN(test_tick_increases_when_wall_time_stalls_or_goes_back);
	RUN(test_counter_overflow_carries_into_ms);
	RUN(test_receive_merges_within_skew);
	RUN(test_receive_refuses_beyond_skew);
	RUN(test_make_and_ms_roundtrip);
	RUN(test_fmt);
	RUN(test_uuid_fmt_parse);
	RUN(test_uuid_parse_refuses);
	RUN(test_uuid_is_nil);
	RUN(test_uuid_v7);
	return 0;
}
