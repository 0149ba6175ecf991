#include "codec.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <libdeflate.h>
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

/* zlib's streaming inflate, which says exactly why a body is refused: at
 * the limit, one byte more of output is -EMSGSIZE, whatever follows; a
 * stream that ends early or breaks before the limit is -EPROTO. libdeflate
 * only says "bad data" or "no room", and its "no room" also comes from a
 * truncated stream whose missing bits it reads as zeros: so a body that
 * libdeflate refuses is decoded once more here to give the reason (only
 * refusals pay for it, and no more than max_out of work). */
static int inflate_stream(const uint8_t *in, size_t len, enum codec_enc enc, size_t max_out,
			  struct buf *out)
{
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

/* Whole-buffer decoding with libdeflate: a push body has arrived whole
 * before it is decoded, and libdeflate inflates it 3.3-3.6 times faster
 * than zlib's streaming inflate (a batch of 100 reports: 82-96 us against
 * 273-322). It needs room for the whole output up front, so the output
 * grows by doubling from a guess (gzip's ISIZE, else four times the input)
 * up to max_out, decoding again after each growth: at worst twice the
 * work of a single pass, and never more memory than max_out. */
static enum libdeflate_result inflate_into(struct libdeflate_decompressor *d,
					    enum codec_enc enc, bool zlib_hdr,
					    const uint8_t *in, size_t len, uint8_t *out,
					    size_t room, size_t *ret_in, size_t *ret_out)
{
	if (enc == CODEC_GZIP)
		return libdeflate_gzip_decompress_ex(d, in, len, out, room, ret_in, ret_out);
	if (zlib_hdr)
		return libdeflate_zlib_decompress_ex(d, in, len, out, room, ret_in, ret_out);
	return libdeflate_deflate_decompress_ex(d, in, len, out, room, ret_in, ret_out);
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

	bool zlib_hdr = enc == CODEC_DEFLATE && is_zlib_header(in, len);
	size_t want;
	if (enc == CODEC_GZIP && len >= 18) {
		/* ISIZE: the input's length mod 2^32, as the sender says; a lie
		 * only costs another pass. One byte more, so that an output of
		 * exactly ISIZE is not mistaken for one that needs more room. */
		want = (size_t)in[len - 4] | (size_t)in[len - 3] << 8 |
		       (size_t)in[len - 2] << 16 | (size_t)in[len - 1] << 24;
		want = want < SIZE_MAX ? want + 1 : want;
		if (want / 1032 > len) /* more than deflate can expand to */
			want = len * 4;
	} else {
		want = len < SIZE_MAX / 4 ? len * 4 : SIZE_MAX;
	}
	want = SH_MIN(SH_MAX(want, (size_t)4096), max_out);

	struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
	if (!d)
		return -ENOMEM;
	int r;
	for (;;) {
		/* To the byte, not buf_reserve's next power of two: a push body
		 * of 115 KB would otherwise take 256 KiB of heap. */
		if (out->cap - out->len < want) {
			uint8_t *p = realloc(out->data, out->len + want);
			if (!p) {
				r = -ENOMEM;
				break;
			}
			out->data = p;
			out->cap = out->len + want;
		}
		size_t used_in = 0, produced = 0;
		enum libdeflate_result z = inflate_into(d, enc, zlib_hdr, in, len,
							 out->data + out->len, want, &used_in,
							 &produced);
		if (z == LIBDEFLATE_SUCCESS) {
			/* bytes after the end of the stream */
			r = used_in == len ? 0 : -EPROTO;
			if (r == 0)
				out->len += produced;
			break;
		}
		if (z != LIBDEFLATE_INSUFFICIENT_SPACE || want >= max_out) {
			r = inflate_stream(in, len, enc, max_out, out);
			break;
		}
		want = want <= max_out / 2 ? want * 2 : max_out;
	}
	libdeflate_free_decompressor(d);
	return r;
}

/* Compressors kept for the next call, a few per level: one is 652 KiB
 * (level 6) and setting it up each time made glibc raise its mmap
 * threshold past it (a freed mapping raises it), so that every buffer
 * below that size came from the heap and stayed resident: the server's own
 * memory under 64 phones went from 16 to 44 MiB. Kept ones are reachable
 * until the process ends. */
#define COMPRESSORS_KEPT 4
static pthread_mutex_t compressors_lock = PTHREAD_MUTEX_INITIALIZER;
static struct libdeflate_compressor *compressors[10][COMPRESSORS_KEPT];

static struct libdeflate_compressor *compressor_get(int level)
{
	struct libdeflate_compressor *c = NULL;
	pthread_mutex_lock(&compressors_lock);
	for (int i = 0; i < COMPRESSORS_KEPT && !c; i++) {
		c = compressors[level][i];
		compressors[level][i] = NULL;
	}
	pthread_mutex_unlock(&compressors_lock);
	return c ? c : libdeflate_alloc_compressor(level);
}

static void compressor_put(int level, struct libdeflate_compressor *c)
{
	pthread_mutex_lock(&compressors_lock);
	for (int i = 0; i < COMPRESSORS_KEPT && c; i++) {
		if (!compressors[level][i]) {
			compressors[level][i] = c;
			c = NULL;
		}
	}
	pthread_mutex_unlock(&compressors_lock);
	if (c)
		libdeflate_free_compressor(c);
}

/* libdeflate's zlib header always announces a 32 KiB window; an input of
 * len bytes has no match further back than len, so announce the smallest
 * window that holds it (512 bytes up), as zlib sized to the input did: a
 * phone's inflater allocates what the header says. */
static void zlib_header_window(uint8_t *h, size_t len)
{
	unsigned wbits = 9;
	while (wbits < 15 && ((size_t)1 << wbits) < len)
		wbits++;
	h[0] = (uint8_t)((wbits - 8) << 4 | 8);
	h[1] &= 0xc0; /* FLEVEL kept; no preset dictionary */
	unsigned rem = ((unsigned)h[0] * 256 + h[1]) % 31;
	if (rem)
		h[1] = (uint8_t)(h[1] + 31 - rem);
}

int codec_deflate(const uint8_t *in, size_t len, enum codec_enc enc, int level, struct buf *out)
{
	if (enc != CODEC_DEFLATE && enc != CODEC_GZIP)
		return -EINVAL;
	if (len > UINT32_MAX)
		return -EMSGSIZE; /* nothing we send whole is that big */
	/* libdeflate, whole buffer: the same ratio as zlib at the same level
	 * in about half the time (a pull page of 115 KB at level 6: 2.2-3.2
	 * ms against 5.1). Its levels go to 12; ours stop at zlib's 9. */
	if (level < 0)
		level = 6;
	if (level > 9)
		return -EINVAL;
	struct libdeflate_compressor *c = compressor_get(level);
	if (!c)
		return -ENOMEM;
	size_t bound = enc == CODEC_GZIP ? libdeflate_gzip_compress_bound(c, len)
					 : libdeflate_zlib_compress_bound(c, len);
	int r = buf_reserve(out, bound);
	if (r == 0) {
		size_t n = enc == CODEC_GZIP
				   ? libdeflate_gzip_compress(c, in, len, out->data + out->len, bound)
				   : libdeflate_zlib_compress(c, in, len, out->data + out->len, bound);
		if (n == 0) {
			r = -ENOMEM; /* cannot happen with the bound's room */
		} else {
			if (enc == CODEC_DEFLATE)
				zlib_header_window(out->data + out->len, len);
			out->len += n;
		}
	}
	compressor_put(level, c);
	return r;
}

/* The streamed form stays on zlib: an export over HTTP is sent while it is
 * made, in pieces of a constant memory whatever the store's size, and
 * libdeflate only compresses whole buffers (compressing each piece as its
 * own stream would cost the ratio and still need a framing of our own). */
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
