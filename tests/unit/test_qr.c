/* The enrolment QR code: which server URLs the payload takes, how it is
 * encoded, and that the PNG written by hand is a valid PNG of the matrix
 * (every chunk's CRC, the pixels inflated back). The integration test
 * (enrol_qr) decodes the images with zbarimg. */
#include <errno.h>
#include <zlib.h>

#include "check.h"
#include "qr.h"

static void test_urls(void)
{
	static const char *const good[] = {
		"https://shahidi.example.org", "http://127.0.0.1:8080", "https://[::1]:443/x/y",
		"https://shahidi.example.org/sync/", "https://a", "http://x-y.z:1/a_b~c.d-e%20",
	};
	char long_url[QR_URL_MAX + 2], err[160];
	memset(long_url, 'a', sizeof(long_url) - 1);
	memcpy(long_url, "https://", 8);
	long_url[sizeof(long_url) - 1] = 0; /* QR_URL_MAX + 1 bytes */
	const char *const bad[] = {
		"", "ftp://x.org", "https://", "https://:80", "https://x:", "https://x:123456",
		"https://x?y", "https://x/#y", "https://u@x", "https://x y", "https://x\x7f",
		"https://[::1", "https://x.org\\p", "https://caf\xc3\xa9.org", "HTTPS://x.org",
		"https://x.org\t", "javascript:alert(1)", "https//x.org", long_url,
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
		err[0] = 0;
		if (qr_url_check(good[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "refused %s: %s\n", good[i], err);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		err[0] = 0;
		if (qr_url_check(bad[i], err, sizeof(err)) != -EINVAL) {
			fprintf(stderr, "took \"%s\"\n", bad[i]);
			CHECK(0);
		}
		CHECK(err[0]); /* and says why */
	}
	long_url[QR_URL_MAX] = 0;
	CHECK_EQ_INT(qr_url_check(long_url, err, sizeof(err)), 0);
	CHECK_EQ_INT(qr_url_check(NULL, err, sizeof(err)), -EINVAL);
}

static void test_payload(void)
{
	struct buf b = {0};
	CHECK_EQ_INT(qr_payload("https://x.org:8443/sync_~.-", 0x00ab0000000000cdULL,
				"shd_AZaz09-_", &b), 0);
	CHECK_EQ_INT(buf_putc(&b, 0), 0);
	CHECK_EQ_STR((const char *)b.data,
		     "shahidi://enroll?v=1&url=https%3A%2F%2Fx.org%3A8443%2Fsync_~.-"
		     "&device=00ab0000000000cd&token=shd_AZaz09-_");
	buf_reset(&b);
	CHECK_EQ_INT(qr_payload("https://x.org/?a", 1, "shd_x", &b), -EINVAL);
	CHECK_EQ_INT((int)b.len, 0);
	buf_free(&b);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void test_png(void)
{
	struct qr *q;
	struct buf png = {0};
	const unsigned scale = 3;
	CHECK_EQ_INT(qr_encode("shahidi://enroll?v=1", &q), 0);
	int w = qr_width(q);
	CHECK(w >= 21 && (w - 17) % 4 == 0); /* a QR code's sides: 21, 25, ... */
	CHECK_EQ_INT(qr_png(q, scale, &png), 0);
	CHECK(png.len > 8 && !memcmp(png.data, "\x89PNG\r\n\x1a\n", 8));
	uint32_t px = (uint32_t)(w + 2 * QR_QUIET) * scale;
	struct buf idat = {0};
	size_t off = 8;
	int chunks = 0;
	bool end = false;
	while (off + 12 <= png.len && !end) {
		uint32_t len = be32(png.data + off);
		const uint8_t *type = png.data + off + 4, *data = type + 4;
		CHECK(off + 12 + len <= png.len);
		CHECK_EQ_INT(be32(data + len), crc32(crc32(0, type, 4), data, len) & 0xffffffffu);
		if (!memcmp(type, "IHDR", 4)) {
			CHECK_EQ_INT(chunks, 0);
			CHECK_EQ_INT(len, 13);
			CHECK_EQ_INT(be32(data), px);
			CHECK_EQ_INT(be32(data + 4), px);
			CHECK_EQ_INT(data[8], 8); /* bit depth */
			CHECK_EQ_INT(data[9], 0); /* greyscale */
		} else if (!memcmp(type, "IDAT", 4)) {
			CHECK_EQ_INT(buf_append(&idat, data, len), 0);
		} else {
			CHECK(!memcmp(type, "IEND", 4) && len == 0);
			end = true;
		}
		chunks++;
		off += 12 + len;
	}
	CHECK(end && off == png.len);
	uLongf raw_len = (uLongf)(1 + px) * px;
	uint8_t *raw = malloc(raw_len + 1);
	uLongf got = raw_len + 1;
	CHECK(raw && uncompress(raw, &got, idat.data, idat.len) == Z_OK && got == raw_len);
	/* a filter byte of 0 per row; the quiet zone white; the finder
	 * pattern's corner (top left of the code) dark */
	for (uint32_t y = 0; y < px; y++)
		CHECK_EQ_INT(raw[y * (1 + px)], 0);
	CHECK_EQ_INT(raw[1], 255);
	uint32_t c = QR_QUIET * scale;
	CHECK_EQ_INT(raw[c * (1 + px) + 1 + c], 0);
	CHECK_EQ_INT(raw[(c - 1) * (1 + px) + 1 + c], 255);
	free(raw);
	buf_free(&idat);
	buf_free(&png);
	qr_free(q);
}

static void test_text_and_svg(void)
{
	struct qr *q;
	struct buf t = {0}, c = {0}, s = {0};
	CHECK_EQ_INT(qr_encode("x", &q), 0);
	int side = qr_width(q) + 2 * QR_QUIET;
	CHECK_EQ_INT(qr_text(q, false, &t), 0);
	CHECK_EQ_INT(qr_text(q, true, &c), 0);
	/* a line per two rows, a cell per module */
	int lines = 0, cells = 0;
	for (size_t i = 0; i < t.len; i++) {
		if (t.data[i] == '\n') {
			CHECK_EQ_INT(cells, side);
			lines++;
			cells = 0;
		} else if ((t.data[i] & 0xc0) != 0x80) {
			cells++;
		}
	}
	CHECK_EQ_INT(lines, (side + 1) / 2);
	CHECK(memmem(t.data, t.len, "\033", 1) == NULL);
	CHECK(c.len == t.len + (size_t)lines * (strlen("\033[30;107m") + strlen("\033[0m")));
	CHECK_EQ_INT(qr_svg(q, 4, &s), 0);
	CHECK_EQ_INT(buf_putc(&s, 0), 0);
	char want[96];
	snprintf(want, sizeof(want), "viewBox=\"0 0 %d %d\" width=\"%d\"", side, side, side * 4);
	CHECK(strstr((const char *)s.data, want));
	CHECK(strstr((const char *)s.data, "</svg>\n"));
	buf_free(&t);
	buf_free(&c);
	buf_free(&s);
	qr_free(q);
	/* more than a QR code holds */
	char big[8000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	CHECK_EQ_INT(qr_encode(big, &q), -EINVAL);
	qr_free(NULL);
}

int main(void)
{
	RUN(test_urls);
	RUN(test_payload);
	RUN(test_png);
	RUN(test_text_and_svg);
	return 0;
}
