#include "common.h"

#include <fcntl.h> /* O_TMPFILE: meson.build defines _GNU_SOURCE */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

const char *sh_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -EINVAL:
		return "invalid input";
	case -EPROTO:
		return "undecodable input";
	case -EMSGSIZE:
		return "input over its size limit";
	case -ENOMEM:
		return "out of memory";
	case -ENOENT:
		return "not found";
	case -EEXIST:
		return "already exists";
	case -ENOSPC:
		return "store full (map size cap or disk full)";
	case -ENOTSUP:
		return "unsupported on-disk format";
	case -EIO:
		return "store input/output error";
	default:
		return err < 0 ? strerror(-err) : "unknown error";
	}
}

uint64_t sh_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t sh_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void sh_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

void sh_device_fmt(uint64_t id, char buf[17])
{
	uint8_t b[8];
	sh_put_be64(b, id);
	sh_hex(b, 8, buf);
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

int sh_unhex(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
		if (h < 0 || l < 0)
			return -EINVAL;
		out[i] = (uint8_t)(h << 4 | l);
	}
	return 0;
}

int sh_device_parse(const char *s, uint64_t *ret_id)
{
	uint64_t v = 0;
	if (!s || strlen(s) != 16)
		return -EINVAL;
	for (int i = 0; i < 16; i++) {
		int d = hexval(s[i]);
		if (d < 0)
			return -EINVAL;
		v = (v << 4) | (uint64_t)d;
	}
	if (v == 0)
		return -EINVAL;
	*ret_id = v;
	return 0;
}

FILE *sh_tmpfile(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		char path[4096 + 32];
		snprintf(path, sizeof(path), "%s/export-XXXXXX", dir);
		if ((fd = mkstemp(path)) < 0)
			return NULL;
		unlink(path);
	}
	FILE *f = fdopen(fd, "w+b");
	if (!f) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return f;
}
