#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "common.h"

int codec_enc_parse(const char *s, size_t len, enum codec_enc *ret_enc)
{
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	enum codec_enc e;
	if (len == 0 || (len == 8 && !strncasecmp(s, "identity", 8)))
		e = CODEC_IDENTITY;
	else if (len == 7 && !strncasecmp(s, "deflate", 7))
		e = CODEC_DEFLATE;
	else if ((len == 4 && !strncasecmp(s, "gzip", 4)) || (len == 6 && !strncasecmp(s, "x-gzip", 6)))
		e = CODEC_GZIP;
	else
		return -EINVAL;
	*ret_enc = e;
	return 0;
}

static int is_zlib_header(const uint8_t *in, size_t len)
{
	return len >= 2 && (in[0] & 0x0f) == 8 && (in[0] >> 4) <= 7 &&
	       ((unsigned)in[0] * 256 + in[1]) % 31 == 0;
}

static enum codec_enc sniff(const uint8_t *in, size_t len)
{
	if (len >= 2 && in[0] == 0x1f && in[1] == 0x8b)
		return CODEC_GZIP;
	if (is_zlib_header(in, len))
		return CODEC_DEFLATE;
	return CODEC_IDENTITY;
}

int codec_inflate(const uint8_t *in, size_t len, enum codec_enc enc, size_t max_out,
		  struct buf *out)
{
	if (enc == CODEC_AUTO)
		enc = sniff(in, len);
	if (enc == CODEC_IDENTITY) {
		if (len > max_out)
			return -EMSGSIZE;
		return buf_append(out, in, len);
	}

	int window = enc == CODEC_GZIP ? 15 + 16 : (is_zlib_header(in, len) ? 15 : -15);
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, window) != Z_OK)
		return -ENOMEM;

	size_t start = out->len;
	int r = 0;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	if (len > UINT32_MAX) {
		r = -EMSGSIZE;
		goto done;
	}
	for (;;) {
		size_t produced = out->len - start;
		if (produced >= max_out) {
			/* At the limit: one more byte of output means over it. */
			uint8_t probe;
			zs.next_out = &probe;
			zs.avail_out = 1;
			int z = inflate(&zs, Z_NO_FLUSH);
			if (z == Z_STREAM_END && zs.avail_out == 1)
				break;
			r = (z == Z_OK || z == Z_STREAM_END || z == Z_BUF_ERROR) && zs.avail_out == 0
				    ? -EMSGSIZE
				    : -EPROTO;
			goto done;
		}
		size_t want = SH_MIN(max_out - produced, (size_t)64 * 1024);
		if ((r = buf_reserve(out, want)) < 0)
			goto done;
		size_t room = SH_MIN(out->cap - out->len, max_out - produced);
		zs.next_out = out->data + out->len;
		zs.avail_out = (uInt)room;
		int z = inflate(&zs, Z_NO_FLUSH);
		out->len += room - zs.avail_out;
		if (z == Z_STREAM_END)
			break;
		if (z == Z_OK)
			continue;
		if (z == Z_BUF_ERROR && zs.avail_in == 0) {
			r = -EPROTO; /* truncated */
			goto done;
		}
		if (z == Z_BUF_ERROR)
			continue;
		r = z == Z_MEM_ERROR ? -ENOMEM : -EPROTO;
		goto done;
	}
	if (zs.avail_in != 0)
		r = -EPROTO; /* bytes after the end of the stream */
done:
	inflateEnd(&zs);
	if (r < 0)
		out->len = start;
	return r;
}

int codec_deflate(const uint8_t *in, size_t len, enum codec_enc enc, int level, struct buf *out)
{
	if (enc != CODEC_DEFLATE && enc != CODEC_GZIP)
		return -EINVAL;
	if (len > UINT32_MAX)
		return -EMSGSIZE; /* zlib counts in 32 bits; nothing we send is that big */
	/* A window and hash no larger than the input: the same output, but
	 * zlib's full-size state (~256 KiB, set up for every call) made a
	 * push response of 1 KB cost ~90 us to compress instead of ~21. */
	int wbits = 9;
	while (wbits < 15 && ((size_t)1 << wbits) < len)
		wbits++;
	int mem = wbits == 15 ? 8 : SH_MAX(1, wbits - 8);
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, level, Z_DEFLATED, enc == CODEC_GZIP ? wbits + 16 : wbits, mem,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	size_t bound = deflateBound(&zs, (uLong)len) + 32;
	size_t start = out->len;
	int r = buf_reserve(out, bound);
	if (r < 0)
		goto done;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out->data + out->len;
	zs.avail_out = (uInt)bound;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
		r = -ENOMEM;
		goto done;
	}
	out->len += bound - zs.avail_out;
done:
	deflateEnd(&zs);
	if (r < 0)
		out->len = start;
	return r;
}

struct codec_deflater {
	z_stream zs;
	bool ended;
};

int codec_deflater_new(enum codec_enc enc, int level, struct codec_deflater **ret)
{
	if (enc != CODEC_DEFLATE && enc != CODEC_GZIP)
		return -EINVAL;
	struct codec_deflater *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	if (deflateInit2(&d->zs, level, Z_DEFLATED, enc == CODEC_GZIP ? 31 : 15, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK) {
		free(d);
		return -ENOMEM;
	}
	*ret = d;
	return 0;
}

int codec_deflater_write(struct codec_deflater *d, const uint8_t *in, size_t len, bool finish,
			 struct buf *out)
{
	if (d->ended)
		return -EINVAL;
	size_t start = out->len;
	d->zs.next_in = (Bytef *)in;
	int zr;
	do {
		/* zlib counts in 32 bits: feed a large input in pieces */
		size_t piece = SH_MIN(len, (size_t)1 << 30);
		d->zs.avail_in = (uInt)piece;
		len -= piece;
		bool last = finish && !len;
		do {
			if (buf_reserve(out, 65536) < 0) {
				out->len = start;
				return -ENOMEM;
			}
			d->zs.next_out = out->data + out->len;
			d->zs.avail_out = (uInt)(out->cap - out->len > UINT32_MAX ? UINT32_MAX
										  : out->cap - out->len);
			uInt before = d->zs.avail_out;
			zr = deflate(&d->zs, last ? Z_FINISH : Z_NO_FLUSH);
			out->len += before - d->zs.avail_out;
			if (zr == Z_STREAM_ERROR) {
				out->len = start;
				return -EINVAL;
			}
		} while (d->zs.avail_out == 0 || (last && zr != Z_STREAM_END));
	} while (len);
	if (finish)
		d->ended = true;
	return 0;
}

void codec_deflater_free(struct codec_deflater *d)
{
	if (!d)
		return;
	deflateEnd(&d->zs);
	free(d);
}

int codec_get_varint(const uint8_t *in, size_t len, size_t *pos, uint64_t *ret)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*pos >= len)
			return -EPROTO;
		uint8_t b = in[(*pos)++];
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*ret = v;
			return 0;
		}
	}
	return -EPROTO;
}


int codec_pb_put_varint(struct buf *out, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;
	do {
		tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return buf_append(out, tmp, n);
}

int codec_pb_put_bytes(struct buf *out, uint32_t number, const void *p, size_t n)
{
	int r;
	if ((r = codec_pb_put_varint(out, (uint64_t)number << 3 | 2)) < 0 ||
	    (r = codec_pb_put_varint(out, n)) < 0)
		return r;
	return buf_append(out, p, n);
}

int codec_pb_put_uint(struct buf *out, uint32_t number, uint64_t v)
{
	int r = codec_pb_put_varint(out, (uint64_t)number << 3);
	return r < 0 ? r : codec_pb_put_varint(out, v);
}

int codec_pb_put_fixed64(struct buf *out, uint32_t number, uint64_t v)
{
	uint8_t b[8];
	int r = codec_pb_put_varint(out, (uint64_t)number << 3 | 1);
	if (r < 0)
		return r;
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	return buf_append(out, b, 8);
}
