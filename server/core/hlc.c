#include "hlc.h"

#include <stdio.h>
#include <time.h>

uint64_t hlc_tick(struct hlc *c, uint64_t wall_ms)
{
	uint64_t last_ms = hlc_ms(c->last);
	uint64_t next;

	if (wall_ms > last_ms)
		next = hlc_make(wall_ms, 0);
	else
		next = c->last + 1; /* a counter overflow carries into the ms */
	c->last = next;
	return next;
}

bool hlc_receive(struct hlc *c, uint64_t remote, uint64_t wall_ms)
{
	if (hlc_ms(remote) > wall_ms + c->max_skew_ms)
		return false;
	if (remote > c->last)
		c->last = remote;
	return true;
}

void hlc_fmt(uint64_t stamp, char *buf, unsigned len)
{
	uint64_t ms = hlc_ms(stamp);
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char date[32];

	if (!gmtime_r(&s, &tm) || !strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm))
		snprintf(date, sizeof(date), "?");
	snprintf(buf, len, "%s.%03uZ+%u", date, (unsigned)(ms % 1000),
		 (unsigned)(stamp & HLC_COUNTER_MASK));
}
