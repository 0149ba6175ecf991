#include "scope.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "render.h"

_Static_assert(SCOPE_COUNTIES < 64, "a scope's counties fit in its bits");

int scope_county_number(const char *c)
{
	if (!c || strlen(c) != 3 || c[0] < '0' || c[0] > '9' || c[1] < '0' || c[1] > '9' ||
	    c[2] < '0' || c[2] > '9')
		return -EINVAL;
	int n = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
	return n >= 1 && n <= SCOPE_COUNTIES ? n : -EINVAL;
}

struct scope scope_all(void)
{
	return (struct scope){.all = true};
}

struct scope scope_none(void)
{
	return (struct scope){.all = false};
}

int scope_add(struct scope *s, const char *code)
{
	int n = scope_county_number(code);
	if (n < 0)
		return n;
	s->bits |= (uint64_t)1 << n;
	return 0;
}

int scope_parse(const char *list, struct scope *ret, char *bad, size_t badlen)
{
	struct scope s = scope_none();
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ", ");
		if (len) {
			char code[8];
			snprintf(code, sizeof(code), "%.*s", (int)(len < 7 ? len : 7), p);
			if (scope_add(&s, code) < 0) {
				if (bad)
					snprintf(bad, badlen, "%.*s", (int)len, p);
				return -EINVAL;
			}
		}
		p += len + (p[len] != 0);
	}
	*ret = s;
	return 0;
}

struct scope scope_of_device(const store_device_t *d)
{
	struct scope s = scope_none();
	if (d->role == ROLE_METRICS)
		return s; /* no record of any county: it reads /metrics only */
	if (d->role == ROLE_ADMIN) {
		s = scope_all();
		s.sensitive = true;
		return s;
	}
	if (d->role != ROLE_COORDINATOR)
		return scope_all();
	for (size_t i = 0; i < d->n_counties; i++)
		scope_add(&s, d->counties[i]);
	if (!s.bits && d->county && d->county[0])
		scope_add(&s, d->county);
	/* enrolled without a county: all of them */
	return s.bits ? s : scope_all();
}

struct scope scope_of_cli(void)
{
	struct scope s = scope_all();
	s.sensitive = true;
	return s;
}

bool scope_has(const struct scope *s, const char *county)
{
	if (s->all)
		return true;
	int n = scope_county_number(county);
	return n > 0 && (s->bits >> n & 1);
}

bool scope_has_any(const struct scope *s, const char *counties)
{
	if (s->all)
		return true;
	for (const char *p = counties; p && *p; p += p[3] ? 4 : 3) {
		char one[4] = {p[0], p[1], p[2], 0};
		if (!p[1] || !p[2])
			break;
		if (scope_has(s, one))
			return true;
	}
	return false;
}

bool scope_has_record(const struct scope *s, const merge_rec_t *rec, const struct form *f,
		      char ret_county[4])
{
	char county[4] = "";
	render_record_county(rec, f, county);
	if (ret_county)
		memcpy(ret_county, county, 4);
	return scope_has(s, county);
}

size_t scope_codes(const struct scope *s, char codes[SCOPE_COUNTIES][4],
		   const char *ptrs[SCOPE_COUNTIES])
{
	size_t n = 0;
	if (s->all)
		return 0;
	for (int i = 1; i <= SCOPE_COUNTIES; i++)
		if (s->bits >> i & 1) {
			snprintf(codes[n], 4, "%03d", i);
			if (ptrs)
				ptrs[n] = codes[n];
			n++;
		}
	return n;
}
