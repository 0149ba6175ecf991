#include "uuid.h"

#include <errno.h>
#include <string.h>

#include "common.h"

void uuid_fmt(const uint8_t id[UUID_LEN], char buf[UUID_STR_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	char *p = buf;
	for (int i = 0; i < UUID_LEN; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = digits[id[i] >> 4];
		*p++ = digits[id[i] & 15];
	}
	*p = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int uuid_parse(const char *s, uint8_t ret_id[UUID_LEN])
{
	uint8_t id[UUID_LEN];
	size_t len = s ? strlen(s) : 0;
	bool dashed = len == UUID_STR_LEN;

	if (!dashed && len != 32)
		return -EINVAL;
	for (int i = 0; i < UUID_LEN; i++) {
		if (dashed && (i == 4 || i == 6 || i == 8 || i == 10)) {
			if (*s != '-')
				return -EINVAL;
			s++;
		}
		int hi = hexval(s[0]), lo = hexval(s[1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		id[i] = (uint8_t)(hi << 4 | lo);
		s += 2;
	}
	memcpy(ret_id, id, UUID_LEN);
	return 0;
}

bool uuid_is_nil(const uint8_t id[UUID_LEN])
{
	for (int i = 0; i < UUID_LEN; i++)
		if (id[i])
			return false;
	return true;
}

void uuid_v7(uint64_t ms, const uint8_t rnd[10], uint8_t ret_id[UUID_LEN])
{
	for (int i = 0; i < 6; i++)
		ret_id[i] = (uint8_t)(ms >> (8 * (5 - i)));
	memcpy(ret_id + 6, rnd, 10);
	ret_id[6] = (uint8_t)(0x70 | (ret_id[6] & 0x0f)); /* version 7 */
	ret_id[8] = (uint8_t)(0x80 | (ret_id[8] & 0x3f)); /* variant 10 */
}
