#include "export_zip.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"
#include "export_long.h"
#include "store.h"

#define SPOOL_PIECE (1u << 20)

struct zip_entry {
	char name[80];
	z_stream z;
	bool z_init;
	uint32_t crc;
	uint64_t usize, csize, offset;
	FILE *spool;                  /* deflated bytes of a table after the
					 first, until the scan is done */
};

enum zip_phase { ZP_START, ZP_SCAN, ZP_SPOOL, ZP_END, ZP_DONE };

struct export_zip {
	struct export_long *x;
	struct zip_entry *e;          /* the tables, then the codebook */
	size_t n;
	struct buf *outs;             /* a page's rows, per table */
	struct buf zb;
	uint64_t cursor, pos;         /* records read; archive bytes made */
	enum zip_phase phase;
	size_t cur;                   /* ZP_SPOOL: the entry being copied */
	bool cur_started;
	uint16_t dos_time, dos_date;
};

int export_zip_new(const struct form_registry *forms, const struct export_opts *o,
		   struct export_zip **ret, char *err, size_t errlen)
{
	struct export_zip *z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	int r = export_long_new(forms, o, &z->x, err, errlen);
	if (r < 0)
		goto fail;
	r = -ENOMEM;
	z->n = export_long_tables(z->x) + 1;
	if (!(z->e = calloc(z->n, sizeof(*z->e))) || !(z->outs = calloc(z->n, sizeof(*z->outs))))
		goto fail;
	for (size_t i = 0; i < z->n; i++) {
		struct zip_entry *e = &z->e[i];
		snprintf(e->name, sizeof(e->name), "%s.csv",
			 i + 1 < z->n ? export_long_table(z->x, i) : "codebook");
		if (deflateInit2(&e->z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			goto fail;
		e->z_init = true;
		e->crc = (uint32_t)crc32(0, NULL, 0);
	}
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	z->dos_time = (uint16_t)(tm.tm_hour << 11 | tm.tm_min << 5 | tm.tm_sec / 2);
	z->dos_date = (uint16_t)((tm.tm_year - 80) << 9 | (tm.tm_mon + 1) << 5 | tm.tm_mday);
	*ret = z;
	return 0;
fail:
	export_zip_free(z);
	return r;
}

void export_zip_free(struct export_zip *z)
{
	if (!z)
		return;
	for (size_t i = 0; z->e && i < z->n; i++) {
		if (z->e[i].z_init)
			deflateEnd(&z->e[i].z);
		if (z->e[i].spool)
			fclose(z->e[i].spool);
	}
	for (size_t i = 0; z->outs && i < z->n; i++)
		buf_free(&z->outs[i]);
	free(z->outs);
	free(z->e);
	buf_free(&z->zb);
	export_long_free(z->x);
	free(z);
}

uint64_t export_zip_written(const struct export_zip *z)
{
	return export_long_written(z->x);
}

/* An unlinked file in the store's directory: a table's rows, deflated,
 * stay as private as the store. */
/* Deflates in[0..n) of entry e onto dst (finish: the end of the entry). */
static int zput(struct zip_entry *e, const uint8_t *in, size_t n, bool finish, struct buf *dst)
{
	e->crc = (uint32_t)crc32(e->crc, in, (uInt)n);
	e->usize += n;
	e->z.next_in = (Bytef *)in;
	e->z.avail_in = (uInt)n;
	size_t before = dst->len;
	int zr;
	do {
		int r = buf_reserve(dst, n / 2 + 4096);
		if (r < 0)
			return r;
		e->z.next_out = dst->data + dst->len;
		e->z.avail_out = (uInt)(dst->cap - dst->len);
		zr = deflate(&e->z, finish ? Z_FINISH : Z_NO_FLUSH);
		if (zr == Z_STREAM_ERROR)
			return -EIO;
		dst->len = dst->cap - e->z.avail_out;
	} while (e->z.avail_out == 0 || (finish && zr != Z_STREAM_END));
	e->csize += dst->len - before;
	return e->usize > UINT32_MAX || e->csize > UINT32_MAX ? -EFBIG : 0;
}

static void local_header(struct export_zip *z, struct zip_entry *e, struct buf *out,
			 size_t start_len)
{
	e->offset = z->pos + (out->len - start_len);
	buf_put_le(out, 0x04034b50, 4);
	buf_put_le(out, 20, 2);               /* version needed: deflate */
	buf_put_le(out, 0x0808, 2);           /* data descriptor follows; UTF-8 names */
	buf_put_le(out, 8, 2);
	buf_put_le(out, z->dos_time, 2);
	buf_put_le(out, z->dos_date, 2);
	buf_put_le(out, 0, 4);
	buf_put_le(out, 0, 4);
	buf_put_le(out, 0, 4);
	buf_put_le(out, (uint32_t)strlen(e->name), 2);
	buf_put_le(out, 0, 2);
	buf_puts(out, e->name);
}

static void descriptor(const struct zip_entry *e, struct buf *out)
{
	buf_put_le(out, 0x08074b50, 4);
	buf_put_le(out, e->crc, 4);
	buf_put_le(out, e->csize, 4);
	buf_put_le(out, e->usize, 4);
}

static void central(struct export_zip *z, struct buf *out, size_t start_len)
{
	uint64_t at = z->pos + (out->len - start_len), size;
	for (size_t i = 0; i < z->n; i++) {
		const struct zip_entry *e = &z->e[i];
		buf_put_le(out, 0x02014b50, 4);
		buf_put_le(out, 0x0314, 2);   /* made by: Unix, 2.0 */
		buf_put_le(out, 20, 2);
		buf_put_le(out, 0x0808, 2);
		buf_put_le(out, 8, 2);
		buf_put_le(out, z->dos_time, 2);
		buf_put_le(out, z->dos_date, 2);
		buf_put_le(out, e->crc, 4);
		buf_put_le(out, e->csize, 4);
		buf_put_le(out, e->usize, 4);
		buf_put_le(out, (uint32_t)strlen(e->name), 2);
		buf_put_le(out, 0, 2);
		buf_put_le(out, 0, 2);
		buf_put_le(out, 0, 2);
		buf_put_le(out, 0, 2);
		buf_put_le(out, 0100600u << 16, 4); /* a regular file, 0600 */
		buf_put_le(out, e->offset, 4);
		buf_puts(out, e->name);
	}
	size = z->pos + (out->len - start_len) - at;
	buf_put_le(out, 0x06054b50, 4);
	buf_put_le(out, 0, 2);
	buf_put_le(out, 0, 2);
	buf_put_le(out, (uint32_t)z->n, 2);
	buf_put_le(out, (uint32_t)z->n, 2);
	buf_put_le(out, size, 4);
	buf_put_le(out, at, 4);
	buf_put_le(out, 0, 2);
}

/* One page: rows into every table; records.csv's deflated bytes straight
 * to out, the others' to their spools. */
static int scan(struct export_zip *z, struct store *s, size_t max_scan, struct buf *out,
		bool *ret_end)
{
	int64_t k = export_long_page(z->x, s, &z->cursor, max_scan, z->outs, ret_end);
	if (k < 0)
		return (int)k;
	for (size_t i = 0; i + 1 < z->n; i++) {
		struct zip_entry *e = &z->e[i];
		struct buf *dst = i ? &z->zb : out;
		int r;
		buf_reset(&z->zb);
		if ((r = zput(e, z->outs[i].data, z->outs[i].len, *ret_end, dst)) < 0)
			return r;
		buf_reset(&z->outs[i]);
		if (i && z->zb.len && fwrite(z->zb.data, 1, z->zb.len, e->spool) != z->zb.len)
			return -EIO;
	}
	return 0;
}

int export_zip_next(struct export_zip *z, struct store *s, size_t max_scan, struct buf *out,
		    bool *ret_done)
{
	size_t start = out->len;
	bool end = false;
	int r = 0;
	*ret_done = false;
	switch (z->phase) {
	case ZP_START:
		for (size_t i = 1; i + 1 < z->n; i++)
			if (!(z->e[i].spool = sh_tmpfile(store_dir(s))))
				return -errno;
		for (size_t i = 0; i + 1 < z->n; i++)
			if ((r = export_long_header(z->x, i, &z->outs[i])) < 0)
				return r;
		local_header(z, &z->e[0], out, start);
		z->phase = ZP_SCAN;
		/* fall through */
	case ZP_SCAN:
		if ((r = scan(z, s, max_scan, out, &end)) < 0)
			return r;
		if (end) {
			descriptor(&z->e[0], out);
			z->phase = ZP_SPOOL;
			z->cur = 1;
		}
		break;
	case ZP_SPOOL: {
		struct zip_entry *e = &z->e[z->cur];
		if (!z->cur_started) {
			local_header(z, e, out, start);
			z->cur_started = true;
			if (fflush(e->spool) != 0 || fseek(e->spool, 0, SEEK_SET) != 0)
				return -EIO;
		}
		if ((r = buf_reserve(out, SPOOL_PIECE)) < 0)
			return r;
		size_t got = fread(out->data + out->len, 1, SPOOL_PIECE, e->spool);
		out->len += got;
		if (got < SPOOL_PIECE) {
			if (ferror(e->spool))
				return -EIO;
			descriptor(e, out);
			fclose(e->spool);
			e->spool = NULL;
			z->cur_started = false;
			if (++z->cur == z->n - 1)
				z->phase = ZP_END;
		}
		break;
	}
	case ZP_END: {
		struct zip_entry *e = &z->e[z->n - 1];
		local_header(z, e, out, start);
		buf_reset(&z->zb);
		if ((r = export_long_codebook(z->x, &z->zb)) < 0 ||
		    (r = zput(e, z->zb.data, z->zb.len, true, out)) < 0)
			return r;
		descriptor(e, out);
		central(z, out, start);
		z->phase = ZP_DONE;
		*ret_done = true;
		break;
	}
	case ZP_DONE:
		*ret_done = true;
		break;
	}
	z->pos += out->len - start;
	return 0;
}
