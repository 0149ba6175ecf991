#include "qr.h"

#include <errno.h>
#include <inttypes.h>
#include <qrencode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct qr {
	QRcode *code; /* libqrencode's; data[y * width + x] & 1: dark */
};

int qr_url_check(const char *url, char *err, size_t errlen)
{
	size_t n = url ? strlen(url) : 0;
	const char *host;
	if (n == 0 || n > QR_URL_MAX) {
		snprintf(err, errlen, "the server URL is 1 to %d bytes (https://...)", QR_URL_MAX);
		return -EINVAL;
	}
	if (!strncmp(url, "https://", 8))
		host = url + 8;
	else if (!strncmp(url, "http://", 7))
		host = url + 7;
	else {
		snprintf(err, errlen, "the server URL starts with https:// (or http://)");
		return -EINVAL;
	}
	for (const char *p = url; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || strchr("?#@\"<>\\^`{|}", *p)) {
			snprintf(err, errlen,
				 "the server URL is the base address only: printable ASCII, no "
				 "spaces, no query, fragment or user name");
			return -EINVAL;
		}
	/* a host name or [IPv6], then :port, then a path */
	size_t h = *host == '[' ? strcspn(host, "]") + 1 : strspn(host, "abcdefghijklmnopqrstuvwxyz"
									 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
									 "0123456789.-");
	bool ok = h > 0 && (*host != '[' || host[h - 1] == ']');
	const char *rest = host + (ok ? h : 0);
	if (ok && *rest == ':') {
		size_t d = strspn(rest + 1, "0123456789");
		ok = d >= 1 && d <= 5;
		rest += 1 + d;
	}
	if (!ok || (*rest && *rest != '/')) {
		snprintf(err, errlen, "the server URL needs a host name: https://HOST[:PORT][/PATH]");
		return -EINVAL;
	}
	return 0;
}

static int qr__put_encoded(struct buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	int r = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && r == 0; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("-._~", *p))
			r = buf_putc(out, (char)*p);
		else
			r = buf_printf(out, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
	}
	return r;
}

int qr_payload(const char *url, uint64_t device, const char *token, struct buf *out)
{
	char err[160];
	int r = qr_url_check(url, err, sizeof(err));
	if (r < 0)
		return r;
	r = buf_puts(out, "shahidi://enroll?v=1&url=");
	if (r == 0)
		r = qr__put_encoded(out, url);
	if (r == 0)
		r = buf_printf(out, "&device=%016" PRIx64 "&token=", device);
	if (r == 0)
		r = qr__put_encoded(out, token);
	return r;
}

int qr_encode(const char *text, struct qr **ret)
{
	struct qr *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	errno = 0;
	q->code = QRcode_encodeString8bit(text, 0, QR_ECLEVEL_M);
	if (!q->code) {
		int e = errno == ERANGE || errno == EINVAL ? -EINVAL : -ENOMEM;
		free(q);
		return e;
	}
	*ret = q;
	return 0;
}

void qr_free(struct qr *q)
{
	if (!q)
		return;
	QRcode_free(q->code);
	free(q);
}

int qr_width(const struct qr *q)
{
	return q->code->width;
}

/* Dark at (x, y), counted with the quiet zone around the code. */
static bool qr__dark(const struct qr *q, int x, int y)
{
	int w = q->code->width;
	x -= QR_QUIET;
	y -= QR_QUIET;
	return x >= 0 && y >= 0 && x < w && y < w && (q->code->data[y * w + x] & 1);
}

int qr_text(const struct qr *q, bool color, struct buf *out)
{
	int side = q->code->width + 2 * QR_QUIET, r = 0;
	/* top dark, bottom dark: full block; one of them: a half block */
	static const char *const cell[4] = {" ", "\xe2\x96\x84", "\xe2\x96\x80", "\xe2\x96\x88"};
	for (int y = 0; y < side && r == 0; y += 2) {
		if (color)
			r = buf_puts(out, "\033[30;107m"); /* black on bright white */
		for (int x = 0; x < side && r == 0; x++)
			r = buf_puts(out, cell[qr__dark(q, x, y) << 1 | qr__dark(q, x, y + 1)]);
		if (r == 0 && color)
			r = buf_puts(out, "\033[0m");
		if (r == 0)
			r = buf_putc(out, '\n');
	}
	return r;
}

int qr_svg(const struct qr *q, unsigned scale, struct buf *out)
{
	int side = q->code->width + 2 * QR_QUIET;
	int r = buf_printf(out,
			   "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
			   "width=\"%u\" height=\"%u\" shape-rendering=\"crispEdges\">"
			   "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/><path fill=\"#000\" d=\"",
			   side, side, side * scale, side * scale, side, side);
	/* one rectangle per run of dark modules in a row */
	for (int y = 0; y < side && r == 0; y++)
		for (int x = 0; x < side && r == 0;) {
			int run = 0;
			while (x + run < side && qr__dark(q, x + run, y))
				run++;
			if (run)
				r = buf_printf(out, "M%d %dh%dv1h-%dz", x, y, run, run);
			x += run ? run : 1;
		}
	if (r == 0)
		r = buf_puts(out, "\"/></svg>\n");
	return r;
}

static int qr__chunk(struct buf *out, const char type[4], const uint8_t *data, size_t len)
{
	uint8_t be[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			 (uint8_t)len};
	uLong crc = crc32(0, (const Bytef *)type, 4);
	crc = crc32(crc, data, (uInt)len);
	uint8_t c[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
	int r = buf_append(out, be, 4);
	if (r == 0)
		r = buf_append(out, type, 4);
	if (r == 0)
		r = buf_append(out, data, len);
	if (r == 0)
		r = buf_append(out, c, 4);
	return r;
}

int qr_png(const struct qr *q, unsigned scale, struct buf *out)
{
	static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	uint32_t px = (uint32_t)(q->code->width + 2 * QR_QUIET) * scale;
	size_t row = 1 + (size_t)px, raw_len = row * px; /* a filter byte per row */
	uint8_t *raw = malloc(raw_len);
	uLongf z_len = compressBound((uLong)raw_len);
	uint8_t *z = malloc(z_len);
	int r = -ENOMEM;
	if (!raw || !z)
		goto out;
	for (uint32_t y = 0; y < px; y++) {
		uint8_t *p = raw + y * row;
		p[0] = 0; /* filter: none */
		for (uint32_t x = 0; x < px; x++)
			p[1 + x] = qr__dark(q, (int)(x / scale), (int)(y / scale)) ? 0 : 255;
	}
	if (compress2(z, &z_len, raw, (uLong)raw_len, 9) != Z_OK)
		goto out;
	uint8_t ihdr[13] = {(uint8_t)(px >> 24), (uint8_t)(px >> 16), (uint8_t)(px >> 8), (uint8_t)px,
			    (uint8_t)(px >> 24), (uint8_t)(px >> 16), (uint8_t)(px >> 8), (uint8_t)px,
			    8, 0 /* greyscale */, 0, 0, 0};
	r = buf_append(out, sig, sizeof(sig));
	if (r == 0)
		r = qr__chunk(out, "IHDR", ihdr, sizeof(ihdr));
	if (r == 0)
		r = qr__chunk(out, "IDAT", z, z_len);
	if (r == 0)
		r = qr__chunk(out, "IEND", sig, 0); /* crc32() of NULL starts over */
out:
	free(raw);
	free(z);
	return r;
}

int qr_enrolment(const char *url, uint64_t device, const char *token, struct buf *payload,
		 struct qr **ret)
{
	int r = qr_payload(url, device, token, payload);
	if (r == 0)
		r = buf_putc(payload, 0);
	if (r == 0)
		r = qr_encode((const char *)payload->data, ret);
	return r;
}
