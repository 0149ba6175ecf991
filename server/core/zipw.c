#include "zipw.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define Z32 0xffffffffu
#define VERSION_ZIP64 45
#define VERSION_PLAIN 10 /* stored entries need nothing newer */

static void put16(struct buf *b, uint32_t v)
{
	uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	buf_append(b, p, 2);
}

static void put32(struct buf *b, uint64_t v)
{
	uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	buf_append(b, p, 4);
}

static void put64(struct buf *b, uint64_t v)
{
	put32(b, v & Z32);
	put32(b, v >> 32);
}

void zipw_init(struct zipw *z, uint64_t start)
{
	memset(z, 0, sizeof(*z));
	z->pos = start;
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	z->dos_time = (uint16_t)(tm.tm_hour << 11 | tm.tm_min << 5 | tm.tm_sec / 2);
	z->dos_date = (uint16_t)((tm.tm_year - 80) << 9 | (tm.tm_mon + 1) << 5 | tm.tm_mday);
}

void zipw_free(struct zipw *z)
{
	if (!z)
		return;
	free(z->e);
	z->e = NULL;
	z->n = z->cap = 0;
}

/* Appends what the caller made through out since len `before` to pos:
 * every byte of the archive is counted once, here or in zipw_data. */
static int advance(struct zipw *z, struct buf *out, size_t before, size_t want)
{
	if (out->len != before + want)
		return -ENOMEM; /* a put ran out of memory: the archive is broken */
	z->pos += want;
	return 0;
}

int zipw_begin(struct zipw *z, const char *name, uint64_t size, struct buf *out)
{
	size_t nl = strlen(name), before = out->len;
	if (z->open || !nl || nl >= ZIPW_NAME_MAX)
		return -EINVAL;
	bool z64 = size >= Z32;
	if (buf_reserve(out, 30 + nl + 20) < 0)
		return -ENOMEM;
	memset(&z->cur, 0, sizeof(z->cur));
	memcpy(z->cur.name, name, nl + 1);
	z->cur.offset = z->pos;
	z->cur.z64 = z64;
	z->cur.crc = (uint32_t)crc32(0, NULL, 0);
	z->promised = size;
	put32(out, 0x04034b50);
	put16(out, z64 ? VERSION_ZIP64 : VERSION_PLAIN);
	put16(out, 0x0808);           /* data descriptor follows; UTF-8 names */
	put16(out, 0);                /* stored */
	put16(out, z->dos_time);
	put16(out, z->dos_date);
	put32(out, 0);                /* CRC and sizes: in the descriptor */
	put32(out, z64 ? Z32 : 0);
	put32(out, z64 ? Z32 : 0);
	put16(out, (uint32_t)nl);
	put16(out, z64 ? 20 : 0);
	buf_append(out, name, nl);
	if (z64) {                    /* sizes to come, 64-bit in the descriptor */
		put16(out, 0x0001);
		put16(out, 16);
		put64(out, 0);
		put64(out, 0);
	}
	int r = advance(z, out, before, 30 + nl + (z64 ? 20 : 0));
	z->open = r == 0;
	return r;
}

void zipw_data(struct zipw *z, const void *p, size_t n)
{
	/* crc32 takes an unsigned int length: feed it pieces */
	const uint8_t *b = p;
	while (n) {
		size_t k = n > (1u << 30) ? 1u << 30 : n;
		z->cur.crc = (uint32_t)crc32(z->cur.crc, b, (uInt)k);
		z->cur.size += k;
		z->pos += k;
		b += k;
		n -= k;
	}
}

int zipw_end(struct zipw *z, struct buf *out)
{
	size_t before = out->len;
	if (!z->open)
		return -EINVAL;
	if (z->cur.size != z->promised)
		return -EIO;
	if (z->n == z->cap) {
		size_t cap = z->cap ? z->cap * 2 : 64;
		struct zipw_entry *e = realloc(z->e, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		z->e = e;
		z->cap = cap;
	}
	if (buf_reserve(out, 24) < 0)
		return -ENOMEM;
	put32(out, 0x08074b50);
	put32(out, z->cur.crc);
	if (z->cur.z64) {
		put64(out, z->cur.size);
		put64(out, z->cur.size);
	} else {
		put32(out, z->cur.size);
		put32(out, z->cur.size);
	}
	int r = advance(z, out, before, z->cur.z64 ? 24 : 16);
	if (r == 0) {
		z->e[z->n++] = z->cur;
		z->open = false;
	}
	return r;
}

int zipw_finish(struct zipw *z, struct buf *out)
{
	size_t before = out->len, want = 0;
	if (z->open)
		return -EINVAL;
	uint64_t at = z->pos;
	for (size_t i = 0; i < z->n; i++) {
		const struct zipw_entry *e = &z->e[i];
		size_t nl = strlen(e->name);
		bool big = e->size >= Z32, far = e->offset >= Z32;
		size_t extra = big || far ? 4 + (big ? 16 : 0) + (far ? 8 : 0) : 0;
		if (buf_reserve(out, 46 + nl + extra) < 0)
			return -ENOMEM;
		put32(out, 0x02014b50);
		put16(out, 0x0300 | VERSION_ZIP64); /* made by: Unix, 4.5 */
		put16(out, extra || e->z64 ? VERSION_ZIP64 : VERSION_PLAIN);
		put16(out, 0x0808);
		put16(out, 0);
		put16(out, z->dos_time);
		put16(out, z->dos_date);
		put32(out, e->crc);
		put32(out, big ? Z32 : e->size);
		put32(out, big ? Z32 : e->size);
		put16(out, (uint32_t)nl);
		put16(out, (uint32_t)extra);
		put16(out, 0);                /* comment */
		put16(out, 0);                /* disk */
		put16(out, 0);                /* internal attributes */
		put32(out, 0100400u << 16);   /* a regular file, 0400: evidence is read, not changed */
		put32(out, far ? Z32 : e->offset);
		buf_append(out, e->name, nl);
		if (extra) {  /* the fields that did not fit, in the order the spec gives */
			put16(out, 0x0001);
			put16(out, (uint32_t)(extra - 4));
			if (big) {
				put64(out, e->size);
				put64(out, e->size);
			}
			if (far)
				put64(out, e->offset);
		}
		want += 46 + nl + extra;
	}
	uint64_t size = want, end64 = at + size;
	bool z64 = z->n >= 0xffff || at >= Z32 || size >= Z32;
	if (buf_reserve(out, 56 + 20 + 22) < 0)
		return -ENOMEM;
	if (z64) {
		put32(out, 0x06064b50);       /* zip64 end of central directory */
		put64(out, 44);
		put16(out, 0x0300 | VERSION_ZIP64);
		put16(out, VERSION_ZIP64);
		put32(out, 0);
		put32(out, 0);
		put64(out, z->n);
		put64(out, z->n);
		put64(out, size);
		put64(out, at);
		put32(out, 0x07064b50);       /* its locator */
		put32(out, 0);
		put64(out, end64);
		put32(out, 1);
		want += 56 + 20;
	}
	put32(out, 0x06054b50);
	put16(out, 0);
	put16(out, 0);
	put16(out, z->n >= 0xffff ? 0xffff : (uint32_t)z->n);
	put16(out, z->n >= 0xffff ? 0xffff : (uint32_t)z->n);
	put32(out, size >= Z32 ? Z32 : size);
	put32(out, at >= Z32 ? Z32 : at);
	put16(out, 0);
	want += 22;
	return advance(z, out, before, want);
}
