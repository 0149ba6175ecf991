#include "zipw.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define Z32 0xffffffffu
#define VERSION_ZIP64 45
#define VERSION_PLAIN 10 /* stored entries need nothing newer */

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
	buf_put_le(out, 0x04034b50, 4);
	buf_put_le(out, z64 ? VERSION_ZIP64 : VERSION_PLAIN, 2);
	buf_put_le(out, 0x0808, 2);           /* data descriptor follows; UTF-8 names */
	buf_put_le(out, 0, 2);                /* stored */
	buf_put_le(out, z->dos_time, 2);
	buf_put_le(out, z->dos_date, 2);
	buf_put_le(out, 0, 4);                /* CRC and sizes: in the descriptor */
	buf_put_le(out, z64 ? Z32 : 0, 4);
	buf_put_le(out, z64 ? Z32 : 0, 4);
	buf_put_le(out, (uint32_t)nl, 2);
	buf_put_le(out, z64 ? 20 : 0, 2);
	buf_append(out, name, nl);
	if (z64) {                    /* sizes to come, 64-bit in the descriptor */
		buf_put_le(out, 0x0001, 2);
		buf_put_le(out, 16, 2);
		buf_put_le(out, 0, 8);
		buf_put_le(out, 0, 8);
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
	buf_put_le(out, 0x08074b50, 4);
	buf_put_le(out, z->cur.crc, 4);
	if (z->cur.z64) {
		buf_put_le(out, z->cur.size, 8);
		buf_put_le(out, z->cur.size, 8);
	} else {
		buf_put_le(out, z->cur.size, 4);
		buf_put_le(out, z->cur.size, 4);
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
		buf_put_le(out, 0x02014b50, 4);
		buf_put_le(out, 0x0300 | VERSION_ZIP64, 2); /* made by: Unix, 4.5 */
		buf_put_le(out, extra || e->z64 ? VERSION_ZIP64 : VERSION_PLAIN, 2);
		buf_put_le(out, 0x0808, 2);
		buf_put_le(out, 0, 2);
		buf_put_le(out, z->dos_time, 2);
		buf_put_le(out, z->dos_date, 2);
		buf_put_le(out, e->crc, 4);
		buf_put_le(out, big ? Z32 : e->size, 4);
		buf_put_le(out, big ? Z32 : e->size, 4);
		buf_put_le(out, (uint32_t)nl, 2);
		buf_put_le(out, (uint32_t)extra, 2);
		buf_put_le(out, 0, 2);                /* comment */
		buf_put_le(out, 0, 2);                /* disk */
		buf_put_le(out, 0, 2);                /* internal attributes */
		buf_put_le(out, 0100400u << 16, 4);   /* a regular file, 0400: evidence is read, not changed */
		buf_put_le(out, far ? Z32 : e->offset, 4);
		buf_append(out, e->name, nl);
		if (extra) {  /* the fields that did not fit, in the order the spec gives */
			buf_put_le(out, 0x0001, 2);
			buf_put_le(out, (uint32_t)(extra - 4), 2);
			if (big) {
				buf_put_le(out, e->size, 8);
				buf_put_le(out, e->size, 8);
			}
			if (far)
				buf_put_le(out, e->offset, 8);
		}
		want += 46 + nl + extra;
	}
	uint64_t size = want, end64 = at + size;
	bool z64 = z->n >= 0xffff || at >= Z32 || size >= Z32;
	if (buf_reserve(out, 56 + 20 + 22) < 0)
		return -ENOMEM;
	if (z64) {
		buf_put_le(out, 0x06064b50, 4);       /* zip64 end of central directory */
		buf_put_le(out, 44, 8);
		buf_put_le(out, 0x0300 | VERSION_ZIP64, 2);
		buf_put_le(out, VERSION_ZIP64, 2);
		buf_put_le(out, 0, 4);
		buf_put_le(out, 0, 4);
		buf_put_le(out, z->n, 8);
		buf_put_le(out, z->n, 8);
		buf_put_le(out, size, 8);
		buf_put_le(out, at, 8);
		buf_put_le(out, 0x07064b50, 4);       /* its locator */
		buf_put_le(out, 0, 4);
		buf_put_le(out, end64, 8);
		buf_put_le(out, 1, 4);
		want += 56 + 20;
	}
	buf_put_le(out, 0x06054b50, 4);
	buf_put_le(out, 0, 2);
	buf_put_le(out, 0, 2);
	buf_put_le(out, z->n >= 0xffff ? 0xffff : (uint32_t)z->n, 2);
	buf_put_le(out, z->n >= 0xffff ? 0xffff : (uint32_t)z->n, 2);
	buf_put_le(out, size >= Z32 ? Z32 : size, 4);
	buf_put_le(out, at >= Z32 ? Z32 : at, 4);
	buf_put_le(out, 0, 2);
	want += 22;
	return advance(z, out, before, want);
}
