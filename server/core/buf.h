/* buf: a growable byte buffer.
 *
 * A zeroed struct buf is an empty buffer. The buffer owns `data`; buf_free()
 * releases it. Appending functions return 0 or -ENOMEM; on -ENOMEM the
 * buffer is unchanged. `data` may move on every append: take pointers into
 * it only after the last append.
 */
#ifndef SHAHIDI_BUF_H
#define SHAHIDI_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
	uint8_t *data; /* owned; NULL when cap == 0 */
	size_t len;
	size_t cap;
};

/* Grows b to hold extra more bytes: buf_reserve's slow path. */
int buf_grow(struct buf *b, size_t extra);

/* Inline: the export and the pull append a few bytes at a time, hundreds
 * of times per record; a call each was a sixth of an export's time. */
static inline int buf_reserve(struct buf *b, size_t extra)
{
	return b->cap - b->len >= extra ? 0 : buf_grow(b, extra);
}

static inline int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	int r = buf_reserve(b, n);
	if (r < 0)
		return r;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static inline int buf_putc(struct buf *b, char c)
{
	int r = buf_reserve(b, 1);
	if (r < 0)
		return r;
	b->data[b->len++] = (uint8_t)c;
	return 0;
}

/* Appends the low n bytes of v, least significant first (zip headers). */
static inline int buf_put_le(struct buf *b, uint64_t v, size_t n)
{
	uint8_t p[8];
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return buf_append(b, p, n);
}

int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps the memory, forgets the content. */
static inline void buf_reset(struct buf *b) { b->len = 0; }
void buf_free(struct buf *b);

#endif
