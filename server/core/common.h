/* Shahidi core: definitions every module shares.
 *
 * Errors: fallible functions return 0 (or a count) on success and a
 * negative errno on failure. The codes we use and what they mean here:
 *   -EINVAL     bad argument or bad input (a client's bytes)
 *   -EPROTO     undecodable bytes (truncated, garbage, not protobuf)
 *   -EMSGSIZE   input larger than a configured limit
 *   -ENOMEM     out of memory
 *   -ENOENT     not found
 *   -EEXIST     already exists / conflicting duplicate
 *   -ENOSPC     store full (map size at its cap, or disk full)
 *   -ENOTSUP    on-disk format newer than this program
 *   -EIO        store failure or corruption
 */
#ifndef SHAHIDI_COMMON_H
#define SHAHIDI_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SH_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SH_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SH_UNUSED(x) ((void)(x))

/* Text for one of our negative error codes. Never NULL. */
const char *sh_strerror(int err);

/* Milliseconds since the Unix epoch, wall clock. */
uint64_t sh_now_ms(void);

/* Monotonic clock in nanoseconds, for durations. */
uint64_t sh_mono_ns(void);

/* Big-endian 64-bit integers: keys that sort in numeric order. */
static inline void sh_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t sh_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline void sh_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t sh_get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Device ids print as 16 lower-case hex digits. buf holds 17 bytes. */
void sh_device_fmt(uint64_t id, char buf[17]);
/* Parses 16 hex digits (nothing else). Returns 0 or -EINVAL. */
int sh_device_parse(const char *s, uint64_t *ret_id);

/* A temporary file in dir, 0600 and unlinked from the start (O_TMPFILE;
 * where the file system lacks it, made and unlinked at once): spooled
 * export data never outlives its process nor leaves the data directory.
 * NULL with errno set. */
FILE *sh_tmpfile(const char *dir);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void sh_hex(const uint8_t *in, size_t n, char *out);
/* Parses exactly 2n hex digits (either case) into out. 0 or -EINVAL. */
int sh_unhex(const char *s, uint8_t *out, size_t n);

#endif
