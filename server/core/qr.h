/* qr: enrolment by QR code, as ODK Collect's settings codes. A phone's
 * app scans one code and has everything it needs to sync: the server's
 * address, its device id and its token.
 *
 * The payload (version 1) is a URI, every value percent-encoded
 * (RFC 3986; the id and the token need none):
 *
 *   shahidi://enroll?v=1&url=https%3A%2F%2Fshahidi.example.org&device=0123456789abcdef&token=shd_...
 *
 *   v       1; an app refuses a version it does not know
 *   url     the server's base URL as the phone reaches it (http or https,
 *           no query, no fragment, no user name; at most QR_URL_MAX bytes)
 *   device  the device id, 16 lower-case hex digits
 *   token   the bearer token (AUTH_TOKEN_LEN characters)
 *
 * The code is drawn from libqrencode's matrix (error correction level M,
 * a quiet zone of 4 modules) as terminal text, SVG or PNG. Whoever holds
 * the code holds the token: the callers show it once and write files of
 * it 0600.
 */
#ifndef SHAHIDI_QR_H
#define SHAHIDI_QR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define QR_URL_MAX 200
#define QR_QUIET 4 /* modules of white around the code */

/* Checks a server URL as the payload takes it. 0, or -EINVAL with why in
 * err. */
int qr_url_check(const char *url, char *err, size_t errlen);

/* Appends the payload for url (checked), device and token to out. 0,
 * -EINVAL (url refused), -ENOMEM. */
int qr_payload(const char *url, uint64_t device, const char *token, struct buf *out);

/* A QR code's matrix. */
struct qr;

/* The enrolment's payload (qr_payload(), NUL-terminated in *payload: it
 * holds the token, so the caller wipes it) and its code in *ret (freed
 * with qr_free()). 0, -EINVAL (url), -ENOMEM, -EMSGSIZE. */
int qr_enrolment(const char *url, uint64_t device, const char *token, struct buf *payload,
		 struct qr **ret);

/* Encodes text (NUL-terminated) as 8-bit data. *ret is freed with
 * qr_free. -ENOMEM, -EINVAL (too long for a QR code). */
int qr_encode(const char *text, struct qr **ret);
/* NULL is a no-op. */
void qr_free(struct qr *q);
/* Modules per side, the quiet zone not included. */
int qr_width(const struct qr *q);

/* The code as lines of UTF-8 half blocks (two rows of modules per line),
 * dark modules drawn as the block. color: wrap each line in ANSI codes
 * for black on white, so that it scans whatever the terminal's colours
 * (for a terminal; false for a file or a pipe). Appends to out: 0,
 * -ENOMEM. */
int qr_text(const struct qr *q, bool color, struct buf *out);
/* The code as a standalone SVG image, scale px per module. */
int qr_svg(const struct qr *q, unsigned scale, struct buf *out);
/* The code as a PNG (8-bit greyscale), scale px per module. */
int qr_png(const struct qr *q, unsigned scale, struct buf *out);

#endif
