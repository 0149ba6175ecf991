/* codec: compression and the raw protobuf wire scanning the sync path needs.
 *
 * Inflating stops at a size limit before the memory is spent, so a zip bomb
 * never reaches memory: the output buffer grows only up to `max_out`.
 */
#ifndef SHAHIDI_CODEC_H
#define SHAHIDI_CODEC_H

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"

enum codec_enc {
	CODEC_IDENTITY = 0,
	CODEC_DEFLATE = 1, /* zlib stream (RFC 1950); raw RFC 1951 accepted too */
	CODEC_GZIP = 2,
	CODEC_AUTO = 3,    /* sniff: gzip magic, zlib header, else identity */
};

/* Parses a Content-Encoding value: "", "identity", "deflate", "gzip",
 * "x-gzip". Returns 0 or -EINVAL (unsupported). */
int codec_enc_parse(const char *s, size_t len, enum codec_enc *ret_enc);

/* Appends the decoded form of in[0..len) to out (libdeflate, whole
 * buffer: out grows by doubling from a guess up to max_out, decoding again
 * when the guess was short). Returns 0; -EMSGSIZE when the result would
 * exceed max_out; -EPROTO for corrupt or truncated compressed data, or
 * bytes after the end of the stream; -ENOMEM. On failure out->len is what
 * it was before the call (its capacity may have grown, never past
 * out->len + max_out). */
int codec_inflate(const uint8_t *in, size_t len, enum codec_enc enc, size_t max_out,
		  struct buf *out);

/* Appends in[0..len) compressed as enc (DEFLATE or GZIP) at level (0-9, or
 * -1 for 6, zlib's default), whole (libdeflate). 0, -EINVAL, -EMSGSIZE
 * (4 GiB or more) or -ENOMEM. */
int codec_deflate(const uint8_t *in, size_t len, enum codec_enc enc, int level, struct buf *out);

/* A compressed stream made piece by piece (a streamed export; zlib, which
 * unlike libdeflate keeps its state between pieces): each
 * codec_deflater_write appends what zlib has ready for in[0..len) to out
 * (possibly nothing: zlib keeps up to its window); finish ends the stream.
 * Memory is zlib's state (~256 KiB), whatever the stream's length. */
struct codec_deflater;
/* enc: DEFLATE or GZIP. 0, -EINVAL or -ENOMEM. */
int codec_deflater_new(enum codec_enc enc, int level, struct codec_deflater **ret);
/* 0 or -ENOMEM (out then as it was), -EINVAL after the end. */
int codec_deflater_write(struct codec_deflater *d, const uint8_t *in, size_t len, bool finish,
			 struct buf *out);
/* NULL is a no-op. */
void codec_deflater_free(struct codec_deflater *d);

/* One top-level field of a protobuf message, as the wire holds it. */
struct pb_field {
	uint32_t number;
	uint32_t wire_type;    /* 0 varint, 1 fixed64, 2 bytes, 5 fixed32 */
	uint64_t varint;       /* wire types 0, 1, 5 */
	const uint8_t *data;   /* wire type 2: points into the input */
	size_t len;
};

/* Reads the varint at *pos and advances *pos. 0 or -EPROTO. */
int codec_get_varint(const uint8_t *in, size_t len, size_t *pos, uint64_t *ret);

/* Reads the field at *pos and advances *pos. Returns 1 when a field was
 * read, 0 at the end of the input, -EPROTO for malformed or truncated
 * bytes. Used to find each change's bytes in a batch exactly as received.
 * Inline: decoding, merging and exporting call it for every field. */
static inline int codec_pb_next(const uint8_t *in, size_t len, size_t *pos,
				struct pb_field *ret)
{
	if (*pos >= len)
		return 0;
	size_t p = *pos;
	uint64_t key, v = 0;
	const uint8_t *data = NULL;
	size_t n = 0;
	if (in[p] < 0x80) /* one-byte tags: fields 1 to 15, nearly all of ours */
		key = in[p++];
	else if (codec_get_varint(in, len, &p, &key) < 0)
		return -EPROTO;
	if (key >> 3 == 0 || key >> 3 > 536870911u)
		return -EPROTO;
	/* the parts in locals, the result written once: this runs for every
	 * field of every change and stored record (building it in a zeroed
	 * struct and copying that out was a quarter of its cost) */
	switch (key & 7) {
	case 0:
		if (p < len && in[p] < 0x80)
			v = in[p++];
		else if (codec_get_varint(in, len, &p, &v) < 0)
			return -EPROTO;
		break;
	case 1: {
		/* little-endian on the wire: one load (stamps and devices are
		 * fixed64, in every entry of every record) */
		uint64_t le;
		if (len - p < 8)
			return -EPROTO;
		memcpy(&le, in + p, 8);
		v = le64toh(le);
		p += 8;
		break;
	}
	case 2: {
		uint64_t m;
		if (p < len && in[p] < 0x80)
			m = in[p++];
		else if (codec_get_varint(in, len, &p, &m) < 0)
			return -EPROTO;
		if (m > len - p)
			return -EPROTO;
		data = in + p;
		n = (size_t)m;
		p += n;
		break;
	}
	case 5: {
		uint32_t le;
		if (len - p < 4)
			return -EPROTO;
		memcpy(&le, in + p, 4);
		v = le32toh(le);
		p += 4;
		break;
	}
	default:
		return -EPROTO; /* groups (3, 4) are not used by us */
	}
	*pos = p;
	ret->number = (uint32_t)(key >> 3);
	ret->wire_type = (uint32_t)(key & 7);
	ret->varint = v;
	ret->data = data;
	ret->len = n;
	return 1;
}

/* Writes straight into memory the caller sized (at most 10 bytes a
 * varint, 11 + 8 a fixed64 field): the one set of varint writers, for the
 * store's values and records. Each returns the bytes written. */
static inline size_t codec_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}

static inline size_t codec_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v > 0x7f) {
		v >>= 7;
		n++;
	}
	return n;
}

static inline size_t codec_put_uint(uint8_t *p, uint32_t number, uint64_t v)
{
	size_t n = codec_put_varint(p, (uint64_t)number << 3);
	return n + codec_put_varint(p + n, v);
}

static inline size_t codec_put_fixed64(uint8_t *p, uint32_t number, uint64_t v)
{
	size_t n = codec_put_varint(p, (uint64_t)number << 3 | 1);
	uint64_t le = htole64(v);
	memcpy(p + n, &le, 8);
	return n + 8;
}

/* A length-delimited field's tag and length, then its len bytes. */
static inline size_t codec_put_len(uint8_t *p, uint32_t number, size_t len)
{
	size_t n = codec_put_varint(p, (uint64_t)number << 3 | 2);
	return n + codec_put_varint(p + n, len);
}

static inline size_t codec_put_bytes(uint8_t *p, uint32_t number, const uint8_t *b, size_t len)
{
	size_t n = codec_put_len(p, number, len);
	if (len)
		memcpy(p + n, b, len);
	return n + len;
}

/* Appends a varint / a tag / a length-delimited field, for writing wire
 * bytes without building a message (pull responses). 0 or -ENOMEM. */
int codec_pb_put_varint(struct buf *out, uint64_t v);
int codec_pb_put_bytes(struct buf *out, uint32_t number, const void *p, size_t n);
int codec_pb_put_uint(struct buf *out, uint32_t number, uint64_t v);
int codec_pb_put_fixed64(struct buf *out, uint32_t number, uint64_t v);

#endif
