/* Compression and protobuf wire scanning: the first code to touch a
 * client's bytes, so every limit and every malformed input is tried, and
 * parsers run on buffers of exactly the input's size so that ASan sees any
 * read past the end. */
#include <errno.h>
#include <zlib.h>

#include "buf.h"
#include "check.h"
#include "codec.h"
#include "common.h"
#include "shahidi.pb-c.h"

#define MiB ((size_t)1 << 20)

/* Deterministic bytes that compress a little but not to nothing: text-like
 * runs with a pseudo-random walk through a small alphabet. */
static uint8_t *sample(size_t n, uint32_t seed)
{
	uint8_t *p = malloc(n ? n : 1);
	CHECK(p);
	uint32_t x = seed | 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)("etaoin shrdlu,\n"[x % 15]);
	}
	return p;
}

/* A heap copy of exactly n bytes: reading p[n] is an ASan error. */
static uint8_t *exact(const uint8_t *src, size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	CHECK(p);
	memcpy(p, src, n);
	return p;
}

static void test_enc_parse(void)
{
	static const struct {
		const char *s;
		int r;
		enum codec_enc e;
	} cases[] = {
		{"", 0, CODEC_IDENTITY},        {"identity", 0, CODEC_IDENTITY},
		{"deflate", 0, CODEC_DEFLATE},  {"gzip", 0, CODEC_GZIP},
		{"x-gzip", 0, CODEC_GZIP},      {"GZip", 0, CODEC_GZIP},
		{"DEFLATE", 0, CODEC_DEFLATE},  {"Identity", 0, CODEC_IDENTITY},
		{" gzip\t", 0, CODEC_GZIP},     {"\t deflate  ", 0, CODEC_DEFLATE},
		{"  ", 0, CODEC_IDENTITY},      {"br", -EINVAL, 0},
		{"compress", -EINVAL, 0},       {"x-compress", -EINVAL, 0},
		{"gzip, deflate", -EINVAL, 0},  {"gzi", -EINVAL, 0},
		{"gzipp", -EINVAL, 0},          {"de flate", -EINVAL, 0},
	};
	for (size_t i = 0; i < SH_ARRAY_SIZE(cases); i++) {
		enum codec_enc e = (enum codec_enc)99;
		int r = codec_enc_parse(cases[i].s, strlen(cases[i].s), &e);
		if (r != cases[i].r)
			fprintf(stderr, "\"%s\"\n", cases[i].s);
		CHECK_EQ_INT(r, cases[i].r);
		CHECK_EQ_INT(e, r == 0 ? cases[i].e : 99); /* written only on success */
	}
	/* The length given counts, not a NUL: "gzip" out of "gzipX". */
	enum codec_enc e;
	CHECK_EQ_INT(codec_enc_parse("gzipX", 4, &e), 0);
	CHECK_EQ_INT(e, CODEC_GZIP);
}

/* Compresses, inflates with dec, and checks the bytes come back. */
static void roundtrip(size_t n, enum codec_enc enc, int level, enum codec_enc dec)
{
	uint8_t *in = sample(n, (uint32_t)n);
	struct buf z = {0}, out = {0};
	CHECK_EQ_INT(codec_deflate(in, n, enc, level, &z), 0);
	CHECK(z.len > 0);
	if (enc == CODEC_GZIP)
		CHECK(z.data[0] == 0x1f && z.data[1] == 0x8b);
	else
		CHECK_EQ_INT(z.data[0] & 0x0f, 8); /* zlib, deflate */
	if (enc != CODEC_GZIP) {
		/* the window is sized to the input: 32K for big ones, down to
		 * 512 bytes (CINFO = log2(window) - 8) */
		unsigned cinfo = z.data[0] >> 4;
		CHECK(n >= 32768 ? cinfo == 7 : ((size_t)256 << cinfo) >= SH_MAX(n, (size_t)512));
		CHECK(n >= 32768 || cinfo == 1 || ((size_t)128 << cinfo) < n);
	}
	uint8_t *zc = exact(z.data, z.len);
	CHECK_EQ_INT(codec_inflate(zc, z.len, dec, n + 1, &out), 0);
	CHECK_EQ_INT(out.len, n);
	CHECK(n == 0 || !memcmp(out.data, in, n));
	free(zc);
	free(in);
	buf_free(&z);
	buf_free(&out);
}

static void test_roundtrip(void)
{
	const size_t sizes[] = {0, 1, 1000, 65536, 300000};
	for (size_t i = 0; i < SH_ARRAY_SIZE(sizes); i++) {
		roundtrip(sizes[i], CODEC_DEFLATE, -1, CODEC_DEFLATE);
		roundtrip(sizes[i], CODEC_GZIP, -1, CODEC_GZIP);
		/* Sniffing: gzip magic, and zlib headers of every level (78 01,
		 * 78 9c, 78 da differ in their second byte). */
		roundtrip(sizes[i], CODEC_GZIP, 6, CODEC_AUTO);
		roundtrip(sizes[i], CODEC_DEFLATE, 1, CODEC_AUTO);
		roundtrip(sizes[i], CODEC_DEFLATE, 6, CODEC_AUTO);
		roundtrip(sizes[i], CODEC_DEFLATE, 9, CODEC_AUTO);
	}
	struct buf z = {0};
	CHECK_EQ_INT(codec_deflate((const uint8_t *)"x", 1, CODEC_IDENTITY, -1, &z), -EINVAL);
	CHECK_EQ_INT(codec_deflate((const uint8_t *)"x", 1, CODEC_AUTO, -1, &z), -EINVAL);
	CHECK_EQ_INT(z.len, 0);
	buf_free(&z);
}

/* RFC 1951 without the zlib wrapper, as some HTTP clients send "deflate". */
static void test_raw_deflate(void)
{
	const size_t n = 50000;
	uint8_t *in = sample(n, 7);
	uint8_t raw[60000];
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	CHECK_EQ_INT(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = in;
	zs.avail_in = (uInt)n;
	zs.next_out = raw;
	zs.avail_out = sizeof(raw);
	CHECK_EQ_INT(deflate(&zs, Z_FINISH), Z_STREAM_END);
	size_t rlen = sizeof(raw) - zs.avail_out;
	deflateEnd(&zs);

	uint8_t *rc = exact(raw, rlen);
	struct buf out = {0};
	CHECK_EQ_INT(codec_inflate(rc, rlen, CODEC_DEFLATE, n, &out), 0);
	CHECK_EQ_INT(out.len, n);
	CHECK(!memcmp(out.data, in, n));
	/* Raw and truncated is still truncated. */
	out.len = 0;
	CHECK_EQ_INT(codec_inflate(rc, rlen / 2, CODEC_DEFLATE, n, &out), -EPROTO);
	free(rc);
	free(in);
	buf_free(&out);
}

static void test_identity(void)
{
	const uint8_t msg[] = "not compressed at all";
	const size_t n = sizeof(msg) - 1;
	struct buf out = {0};
	CHECK_EQ_INT(codec_inflate(msg, n, CODEC_IDENTITY, n, &out), 0);
	CHECK_EQ_INT(out.len, n);
	CHECK(!memcmp(out.data, msg, n));
	/* AUTO sees neither gzip magic nor a zlib header: passthrough. */
	CHECK_EQ_INT(codec_inflate(msg, n, CODEC_AUTO, 2 * n, &out), 0);
	CHECK_EQ_INT(out.len, 2 * n);
	CHECK(!memcmp(out.data + n, msg, n));
	/* The limit holds for identity too. */
	CHECK_EQ_INT(codec_inflate(msg, n, CODEC_IDENTITY, n - 1, &out), -EMSGSIZE);
	CHECK_EQ_INT(out.len, 2 * n);
	buf_free(&out);
}

/* The limit is on the decoded size: exactly max_out passes, one less not. */
static void test_limit_exact(void)
{
	const size_t sizes[] = {1, 100, 65536, 65537, 200000};
	for (size_t i = 0; i < SH_ARRAY_SIZE(sizes); i++) {
		size_t n = sizes[i];
		uint8_t *in = sample(n, 3);
		const enum codec_enc encs[] = {CODEC_DEFLATE, CODEC_GZIP};
		for (size_t k = 0; k < SH_ARRAY_SIZE(encs); k++) {
			struct buf z = {0}, out = {0};
			CHECK_EQ_INT(codec_deflate(in, n, encs[k], -1, &z), 0);
			CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], n, &out), 0);
			CHECK_EQ_INT(out.len, n);
			CHECK(!memcmp(out.data, in, n));
			out.len = 0;
			CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], n - 1, &out), -EMSGSIZE);
			CHECK_EQ_INT(out.len, 0);
			buf_free(&z);
			buf_free(&out);
		}
		free(in);
	}
}

/* 1 GiB of zeros is about 1 MB deflated. Inflating it under a 1 MiB limit
 * must stop at the limit: the buffer never grows towards the 1 GiB.
 * (64 MiB under valgrind, SHAHIDI_TEST_QUICK=1: the point is the same.) */
static void test_zip_bomb(void)
{
	static uint8_t zeros[1 << 20];
	int mib = getenv("SHAHIDI_TEST_QUICK") ? 64 : 1024;
	struct buf z = {0};
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	/* Z_RLE finds the same distance-1 matches as level 9, much faster. */
	CHECK_EQ_INT(deflateInit2(&zs, 9, Z_DEFLATED, 15, 9, Z_RLE), Z_OK);
	for (int i = 0; i <= mib; i++) {
		zs.next_in = zeros;
		zs.avail_in = i < mib ? sizeof(zeros) : 0;
		int flush = i < mib ? Z_NO_FLUSH : Z_FINISH;
		do {
			CHECK_EQ_INT(buf_reserve(&z, 64 * 1024), 0);
			zs.next_out = z.data + z.len;
			zs.avail_out = 64 * 1024;
			int r = deflate(&zs, flush);
			CHECK(r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR);
			z.len += 64 * 1024 - zs.avail_out;
		} while (zs.avail_out == 0 || zs.avail_in > 0);
	}
	CHECK_EQ_INT(zs.total_in, (uint64_t)mib << 20);
	deflateEnd(&zs);
	CHECK(z.len < 2 * MiB);

	const enum codec_enc decs[] = {CODEC_DEFLATE, CODEC_AUTO};
	for (size_t k = 0; k < SH_ARRAY_SIZE(decs); k++) {
		struct buf out = {0};
		CHECK_EQ_INT(codec_inflate(z.data, z.len, decs[k], MiB, &out), -EMSGSIZE);
		CHECK_EQ_INT(out.len, 0);
		CHECK(out.cap <= 2 * MiB);
		buf_free(&out);
	}
	buf_free(&z);
}

static void test_truncated(void)
{
	const size_t n = 5000;
	uint8_t *in = sample(n, 11);
	const enum codec_enc encs[] = {CODEC_DEFLATE, CODEC_GZIP};
	for (size_t k = 0; k < SH_ARRAY_SIZE(encs); k++) {
		struct buf z = {0}, out = {0};
		CHECK_EQ_INT(codec_deflate(in, n, encs[k], -1, &z), 0);
		/* Every cut, down to nothing, including inside the trailer's
		 * checksum and length. */
		for (size_t cut = 0; cut < z.len; cut++) {
			uint8_t *p = exact(z.data, cut);
			int r = codec_inflate(p, cut, encs[k], 2 * n, &out);
			if (r != -EPROTO)
				fprintf(stderr, "enc %d cut %zu of %zu: %d\n", encs[k], cut, z.len, r);
			CHECK_EQ_INT(r, -EPROTO);
			CHECK_EQ_INT(out.len, 0);
			free(p);
		}
		buf_free(&z);
		buf_free(&out);
	}
	free(in);
}

static void test_trailing_and_corrupt(void)
{
	const size_t n = 3000;
	uint8_t *in = sample(n, 5);
	const enum codec_enc encs[] = {CODEC_DEFLATE, CODEC_GZIP};
	for (size_t k = 0; k < SH_ARRAY_SIZE(encs); k++) {
		struct buf z = {0}, out = {0};
		CHECK_EQ_INT(codec_deflate(in, n, encs[k], -1, &z), 0);
		size_t zlen = z.len;

		/* Garbage after the end of the stream. */
		CHECK_EQ_INT(buf_append(&z, "junk", 4), 0);
		CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], 2 * n, &out), -EPROTO);
		CHECK_EQ_INT(out.len, 0);
		/* A second copy of the stream is trailing bytes too. */
		uint8_t *copy = exact(z.data, zlen);
		z.len = zlen;
		CHECK_EQ_INT(buf_append(&z, copy, zlen), 0); /* not z.data: it may move */
		free(copy);
		CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], 4 * n, &out), -EPROTO);
		CHECK_EQ_INT(out.len, 0);

		/* The last byte is part of the checksum (zlib: Adler-32) or
		 * the length (gzip: ISIZE): flipping it must be caught. */
		z.len = zlen;
		z.data[zlen - 1] ^= 0x01;
		CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], 2 * n, &out), -EPROTO);
		z.data[zlen - 1] ^= 0x01;
		/* gzip's CRC-32 sits 8 bytes from the end. */
		if (encs[k] == CODEC_GZIP) {
			z.data[zlen - 8] ^= 0x80;
			CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], 2 * n, &out), -EPROTO);
			z.data[zlen - 8] ^= 0x80;
		}
		CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], 2 * n, &out), 0);
		CHECK_EQ_INT(out.len, n);
		buf_free(&z);
		buf_free(&out);
	}
	free(in);
}

static void test_garbage(void)
{
	for (uint32_t seed = 1; seed <= 20; seed++) {
		uint8_t g[512];
		uint32_t x = seed * 2654435761u;
		for (size_t i = 0; i < sizeof(g); i++) {
			x = x * 1103515245u + 12345u;
			g[i] = (uint8_t)(x >> 16);
		}
		struct buf out = {0};
		CHECK_EQ_INT(codec_inflate(g, sizeof(g), CODEC_DEFLATE, MiB, &out), -EPROTO);
		CHECK_EQ_INT(codec_inflate(g, sizeof(g), CODEC_GZIP, MiB, &out), -EPROTO);
		/* A valid zlib header before the garbage does not help. */
		g[0] = 0x78;
		g[1] = 0x9c;
		CHECK_EQ_INT(codec_inflate(g, sizeof(g), CODEC_AUTO, MiB, &out), -EPROTO);
		CHECK_EQ_INT(out.len, 0);
		buf_free(&out);
	}
}

/* A failed call leaves what the buffer held before it, and nothing more. */
static void test_failure_restores_len(void)
{
	const size_t n = 100000;
	uint8_t *in = sample(n, 9);
	struct buf z = {0}, out = {0};
	CHECK_EQ_INT(codec_deflate(in, n, CODEC_GZIP, -1, &z), 0);
	CHECK_EQ_INT(buf_puts(&out, "earlier"), 0);

	CHECK_EQ_INT(codec_inflate(z.data, z.len, CODEC_GZIP, n / 2, &out), -EMSGSIZE);
	CHECK_EQ_INT(out.len, 7);
	CHECK_EQ_INT(codec_inflate(z.data, z.len - 3, CODEC_GZIP, n, &out), -EPROTO);
	CHECK_EQ_INT(out.len, 7);
	CHECK(!memcmp(out.data, "earlier", 7));

	/* And a success appends after it; the limit counts only new bytes. */
	CHECK_EQ_INT(codec_inflate(z.data, z.len, CODEC_GZIP, n, &out), 0);
	CHECK_EQ_INT(out.len, 7 + n);
	CHECK(!memcmp(out.data, "earlier", 7));
	CHECK(!memcmp(out.data + 7, in, n));

	/* codec_deflate appends too. */
	size_t zlen = z.len;
	CHECK_EQ_INT(codec_deflate(in, 10, CODEC_DEFLATE, -1, &z), 0);
	out.len = 0;
	CHECK_EQ_INT(codec_inflate(z.data + zlen, z.len - zlen, CODEC_DEFLATE, 10, &out), 0);
	CHECK(!memcmp(out.data, in, 10));
	free(in);
	buf_free(&z);
	buf_free(&out);
}

static Shahidi__V1__Change *change(uint64_t id, const uint8_t rid[16])
{
	Shahidi__V1__Change *c = malloc(sizeof(*c));
	CHECK(c);
	shahidi__v1__change__init(c);
	c->change_id = id;
	c->record_id.data = (uint8_t *)rid;
	c->record_id.len = 16;
	c->form_id = (char *)"incident_report";
	c->form_version = 1;
	c->hlc = 0x0123456789abcdefull;
	return c;
}

/* A PushBatch as a phone packs it. */
static uint8_t *pack_batch(size_t *ret_len, Shahidi__V1__Change **ch)
{
	Shahidi__V1__PushBatch b = SHAHIDI__V1__PUSH_BATCH__INIT;
	b.device = 0xfedcba9876543210ull;
	b.batch_seq = 300; /* two varint bytes: ac 02 */
	b.app_version = (char *)"1.4.2";
	b.n_changes = 2;
	b.changes = ch;
	*ret_len = shahidi__v1__push_batch__get_packed_size(&b);
	uint8_t *p = malloc(*ret_len);
	CHECK(p);
	CHECK_EQ_INT(shahidi__v1__push_batch__pack(&b, p), *ret_len);
	return p;
}

static void test_pb_walk(void)
{
	static const uint8_t rid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	Shahidi__V1__Change *ch[2] = {change(41, rid), change(42, rid)};
	size_t n;
	uint8_t *msg = pack_batch(&n, ch);

	struct pb_field f;
	size_t pos = 0;
	CHECK_EQ_INT(codec_pb_next(msg, n, &pos, &f), 1);
	CHECK_EQ_INT(f.number, 1);
	CHECK_EQ_INT(f.wire_type, 1);
	CHECK(f.varint == 0xfedcba9876543210ull);
	CHECK_EQ_INT(pos, 9); /* tag + 8 bytes */
	CHECK_EQ_INT(codec_pb_next(msg, n, &pos, &f), 1);
	CHECK_EQ_INT(f.number, 2);
	CHECK_EQ_INT(f.wire_type, 0);
	CHECK_EQ_INT(f.varint, 300);
	CHECK_EQ_INT(pos, 12);
	CHECK_EQ_INT(codec_pb_next(msg, n, &pos, &f), 1);
	CHECK_EQ_INT(f.number, 3);
	CHECK_EQ_INT(f.wire_type, 2);
	CHECK_EQ_INT(f.len, 5);
	CHECK(!memcmp(f.data, "1.4.2", 5));
	for (int i = 0; i < 2; i++) {
		CHECK_EQ_INT(codec_pb_next(msg, n, &pos, &f), 1);
		CHECK_EQ_INT(f.number, 6);
		CHECK_EQ_INT(f.wire_type, 2);
		CHECK_EQ_INT(f.len, shahidi__v1__change__get_packed_size(ch[i]));
		/* The bytes found are the change exactly as packed. */
		Shahidi__V1__Change *c = shahidi__v1__change__unpack(NULL, f.len, f.data);
		CHECK(c);
		CHECK_EQ_INT(c->change_id, 41 + i);
		CHECK(c->hlc == 0x0123456789abcdefull);
		shahidi__v1__change__free_unpacked(c, NULL);
	}
	CHECK_EQ_INT(pos, n);
	CHECK_EQ_INT(codec_pb_next(msg, n, &pos, &f), 0);
	CHECK_EQ_INT(pos, n);
	free(msg);
	free(ch[0]);
	free(ch[1]);
}

/* Every prefix of a message: the fields read are the message's own, and
 * the walk ends cleanly only where a field ends; elsewhere -EPROTO. */
static void test_pb_truncated(void)
{
	static const uint8_t rid[16] = {0xaa};
	Shahidi__V1__Change *ch[2] = {change(1, rid), change(300, rid)};
	size_t n;
	uint8_t *msg = pack_batch(&n, ch);

	size_t ends[16], n_ends = 0;
	struct pb_field all[16], f;
	size_t pos = 0;
	while (codec_pb_next(msg, n, &pos, &all[n_ends]) == 1) {
		ends[n_ends++] = pos;
		CHECK(n_ends < SH_ARRAY_SIZE(ends));
	}
	CHECK_EQ_INT(n_ends, 5);

	for (size_t cut = 0; cut <= n; cut++) {
		uint8_t *p = exact(msg, cut);
		size_t k = 0, at = 0;
		int r;
		pos = 0;
		while ((r = codec_pb_next(p, cut, &pos, &f)) == 1) {
			CHECK(k < n_ends);
			CHECK_EQ_INT(pos, ends[k]);
			CHECK(pos <= cut);
			CHECK_EQ_INT(f.number, all[k].number);
			CHECK(f.varint == all[k].varint);
			CHECK_EQ_INT(f.len, all[k].len);
			if (f.wire_type == 2)
				CHECK(f.data == p + (all[k].data - msg));
			at = pos;
			k++;
		}
		if (r == 0) {
			CHECK_EQ_INT(at, cut);
			CHECK(cut == 0 || cut == ends[k - 1]);
		} else {
			CHECK_EQ_INT(r, -EPROTO);
			CHECK_EQ_INT(pos, at); /* *pos untouched by the failed read */
			CHECK(k == n_ends || cut < ends[k]);
		}
		free(p);
	}
	free(msg);
	free(ch[0]);
	free(ch[1]);
}

static int next1(const uint8_t *src, size_t n)
{
	uint8_t *p = exact(src, n);
	struct pb_field f;
	size_t pos = 0;
	int r = codec_pb_next(p, n, &pos, &f);
	free(p);
	return r;
}

static void test_pb_refuses(void)
{
	/* Groups: field 1 start group (3), end group (4). */
	CHECK_EQ_INT(next1((const uint8_t[]){0x0b, 0x08, 0x01, 0x0c}, 4), -EPROTO);
	CHECK_EQ_INT(next1((const uint8_t[]){0x0c}, 1), -EPROTO);
	/* Wire types 6 and 7 do not exist. */
	CHECK_EQ_INT(next1((const uint8_t[]){0x0e, 0x00}, 2), -EPROTO);
	CHECK_EQ_INT(next1((const uint8_t[]){0x0f, 0x00}, 2), -EPROTO);
	/* Field number 0, and one above 2^29 - 1 (tag 2^32, five bytes). */
	CHECK_EQ_INT(next1((const uint8_t[]){0x00, 0x01}, 2), -EPROTO);
	CHECK_EQ_INT(next1((const uint8_t[]){0x80, 0x80, 0x80, 0x80, 0x10, 0x01}, 6), -EPROTO);
	/* An 11-byte varint. */
	CHECK_EQ_INT(next1((const uint8_t[]){0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					     0xff, 0xff, 0xff, 0x01}, 12), -EPROTO);
	/* A length far beyond the input, and one that would wrap. */
	CHECK_EQ_INT(next1((const uint8_t[]){0x0a, 0x05, 'a', 'b'}, 4), -EPROTO);
	CHECK_EQ_INT(next1((const uint8_t[]){0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					     0xff, 0xff, 0x01}, 11), -EPROTO);
	/* Fixed widths short by one byte. */
	CHECK_EQ_INT(next1((const uint8_t[]){0x09, 1, 2, 3, 4, 5, 6, 7}, 8), -EPROTO);
	CHECK_EQ_INT(next1((const uint8_t[]){0x0d, 1, 2, 3}, 4), -EPROTO);
	/* Just right: fixed32 reads little-endian. */
	uint8_t ok[] = {0x0d, 0x78, 0x56, 0x34, 0x12};
	struct pb_field f;
	size_t pos = 0;
	CHECK_EQ_INT(codec_pb_next(ok, sizeof(ok), &pos, &f), 1);
	CHECK_EQ_INT(f.wire_type, 5);
	CHECK_EQ_INT(f.varint, 0x12345678);
	/* Largest field number, 2^29 - 1: tag f8 ff ff ff 0f. */
	CHECK_EQ_INT(next1((const uint8_t[]){0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00}, 6), 1);
}

static void test_pb_put(void)
{
	struct buf b = {0};
	/* Varint bytes worked out by hand: 7 bits a byte, low first. */
	CHECK_EQ_INT(codec_pb_put_varint(&b, 0), 0);
	CHECK_EQ_INT(codec_pb_put_varint(&b, 127), 0);
	CHECK_EQ_INT(codec_pb_put_varint(&b, 128), 0);
	CHECK_EQ_INT(codec_pb_put_varint(&b, 300), 0);
	const uint8_t want[] = {0x00, 0x7f, 0x80, 0x01, 0xac, 0x02};
	CHECK_EQ_INT(b.len, sizeof(want));
	CHECK(!memcmp(b.data, want, sizeof(want)));
	b.len = 0;
	CHECK_EQ_INT(codec_pb_put_varint(&b, UINT64_MAX), 0);
	CHECK_EQ_INT(b.len, 10); /* 9 x 7 bits, then the 64th bit */
	CHECK_EQ_INT(b.data[9], 0x01);
	for (int i = 0; i < 9; i++)
		CHECK_EQ_INT(b.data[i], 0xff);

	/* A PushBatch written field by field, read back by protobuf-c. */
	b.len = 0;
	CHECK_EQ_INT(codec_pb_put_fixed64(&b, 1, 0x1122334455667788ull), 0);
	CHECK_EQ_INT(codec_pb_put_uint(&b, 2, UINT64_MAX), 0);
	CHECK_EQ_INT(codec_pb_put_bytes(&b, 3, "9.9.9", 5), 0);
	CHECK_EQ_INT(codec_pb_put_uint(&b, 4, 7), 0);
	CHECK_EQ_INT(codec_pb_put_bytes(&b, 6, "", 0), 0); /* an empty Change */
	Shahidi__V1__PushBatch *pb = shahidi__v1__push_batch__unpack(NULL, b.len, b.data);
	CHECK(pb);
	CHECK(pb->device == 0x1122334455667788ull);
	CHECK(pb->batch_seq == UINT64_MAX);
	CHECK_EQ_STR(pb->app_version, "9.9.9");
	CHECK_EQ_INT(pb->unsent, 7);
	CHECK_EQ_INT(pb->n_changes, 1);
	CHECK_EQ_INT(pb->changes[0]->change_id, 0);
	shahidi__v1__push_batch__free_unpacked(pb, NULL);

	/* And by codec_pb_next, a large field number included. */
	CHECK_EQ_INT(codec_pb_put_uint(&b, 536870911, 1), 0);
	uint8_t *p = exact(b.data, b.len);
	const struct {
		uint32_t number, wire;
		uint64_t v;
		size_t len;
	} exp[] = {{1, 1, 0x1122334455667788ull, 0}, {2, 0, UINT64_MAX, 0}, {3, 2, 0, 5},
		   {4, 0, 7, 0}, {6, 2, 0, 0}, {536870911, 0, 1, 0}};
	struct pb_field f;
	size_t pos = 0;
	for (size_t i = 0; i < SH_ARRAY_SIZE(exp); i++) {
		CHECK_EQ_INT(codec_pb_next(p, b.len, &pos, &f), 1);
		CHECK_EQ_INT(f.number, exp[i].number);
		CHECK_EQ_INT(f.wire_type, exp[i].wire);
		CHECK(f.varint == exp[i].v);
		CHECK_EQ_INT(f.len, exp[i].len);
	}
	CHECK_EQ_INT(codec_pb_next(p, b.len, &pos, &f), 0);
	free(p);
	buf_free(&b);
}

/* A stream made piece by piece (streamed exports) inflates to the pieces
 * joined, whatever the pieces' sizes; an empty stream is a valid one; a
 * write after the end is refused; NULL frees nothing. */
static void test_deflater(void)
{
	enum codec_enc encs[] = {CODEC_DEFLATE, CODEC_GZIP};
	size_t n = 3 << 20;
	uint8_t *in = sample(n, 7);
	for (int k = 0; k < 2; k++) {
		struct codec_deflater *d;
		struct buf z = {0}, out = {0};
		CHECK_EQ_INT(codec_deflater_new(encs[k], 6, &d), 0);
		size_t pos = 0, step = 1;
		while (pos < n) {
			size_t len = SH_MIN(step, n - pos);
			CHECK_EQ_INT(codec_deflater_write(d, in + pos, len, false, &z), 0);
			pos += len;
			step = step * 3 + 1; /* 1 byte up to megabytes */
		}
		CHECK_EQ_INT(codec_deflater_write(d, NULL, 0, true, &z), 0);
		CHECK_EQ_INT(codec_deflater_write(d, in, 1, false, &z), -EINVAL);
		codec_deflater_free(d);
		if (encs[k] == CODEC_GZIP)
			CHECK(z.data[0] == 0x1f && z.data[1] == 0x8b);
		CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], n, &out), 0);
		CHECK_EQ_INT(out.len, n);
		CHECK(!memcmp(out.data, in, n));
		buf_reset(&z);
		buf_reset(&out);
		CHECK_EQ_INT(codec_deflater_new(encs[k], 6, &d), 0);
		CHECK_EQ_INT(codec_deflater_write(d, NULL, 0, true, &z), 0);
		codec_deflater_free(d);
		CHECK_EQ_INT(codec_inflate(z.data, z.len, encs[k], 1, &out), 0);
		CHECK_EQ_INT(out.len, 0);
		buf_free(&z);
		buf_free(&out);
	}
	struct codec_deflater *d;
	CHECK_EQ_INT(codec_deflater_new(CODEC_IDENTITY, 6, &d), -EINVAL);
	codec_deflater_free(NULL);
	free(in);
}

int main(void)
{
	RUN(test_enc_parse);
	RUN(test_roundtrip);
	RUN(test_raw_deflate);
	RUN(test_identity);
	RUN(test_limit_exact);
	RUN(test_zip_bomb);
	RUN(test_truncated);
	RUN(test_trailing_and_corrupt);
	RUN(test_garbage);
	RUN(test_failure_restores_len);
	RUN(test_deflater);
	RUN(test_pb_walk);
	RUN(test_pb_truncated);
	RUN(test_pb_refuses);
	RUN(test_pb_put);
	return 0;
}
