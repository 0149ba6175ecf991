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

struct buf {
	uint8_t *data; /* owned; NULL when cap == 0 */
	size_t len;
	size_t cap;
};

int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_putc(struct buf *b, char c);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps the memory, forgets the content. */
static inline void buf_reset(struct buf *b) { b->len = 0; }
void buf_free(struct buf *b);

#endif
