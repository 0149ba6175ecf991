#include "zchange.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "arena.h"

/* A fast level: a change is compressed once on a pool thread and decoded
 * by every pull, export and merge that reads it. On 5,000 changes of
 * 1.8-4 KB (v3 reports with repeat groups; this VM, 2026-12-02): level 1
 * 0.557 of the bytes in 13-23 us, decoded in 7 us; level -1 0.635 in 10
 * us, decoded in 2.7 us (libdeflate level 1: 0.537 in 20 us, 7.4 us).
 * Either brings such an entry under LMDB's largest node, which is what
 * saves the bytes (its overflow page). */
#define ZCHANGE_LEVEL (-1)

/* A frame smaller than the bytes by less than this is not worth a
 * decompression on every read. */
#define ZCHANGE_MIN_GAIN 16

struct ctxs {
	ZSTD_CCtx *c; /* owned */
	ZSTD_DCtx *d; /* owned */
};

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int key_err;

static void ctxs_free(void *p)
{
	struct ctxs *x = p;
	ZSTD_freeCCtx(x->c);
	ZSTD_freeDCtx(x->d);
	free(x);
}

static void key_init(void)
{
	key_err = pthread_key_create(&key, ctxs_free);
}

/* This thread's contexts; NULL when out of memory. */
static struct ctxs *thread_ctxs(void)
{
	pthread_once(&once, key_init);
	if (key_err)
		return NULL;
	struct ctxs *x = pthread_getspecific(key);
	if (x)
		return x;
	if (!(x = calloc(1, sizeof(*x))))
		return NULL;
	if (pthread_setspecific(key, x)) {
		free(x);
		return NULL;
	}
	return x;
}

int zchange_pack(struct arena *a, const uint8_t *src, size_t len, const uint8_t **ret,
		 size_t *ret_len)
{
	*ret = NULL;
	*ret_len = 0;
	if (len < ZCHANGE_FROM || len > ZCHANGE_MAX)
		return 0;
	struct ctxs *x = thread_ctxs();
	if (!x)
		return -ENOMEM;
	if (!x->c) {
		if (!(x->c = ZSTD_createCCtx()))
			return -ENOMEM;
		/* the decoded size goes in the frame: readers size their buffer
		 * from it, and check it against ZCHANGE_MAX */
		if (ZSTD_isError(ZSTD_CCtx_setParameter(x->c, ZSTD_c_compressionLevel,
							ZCHANGE_LEVEL)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(x->c, ZSTD_c_contentSizeFlag, 1)))
			return -ENOMEM;
	}
	size_t cap = len - ZCHANGE_MIN_GAIN;
	uint8_t *p = arena_alloc(a, cap);
	if (!p)
		return -ENOMEM;
	size_t n = ZSTD_compress2(x->c, p, cap, src, len);
	if (ZSTD_isError(n)) {
		/* dstSize_tooSmall: it does not shrink enough; keep it raw */
		arena_shrink(a, p, 0);
		return ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ? -ENOMEM : 0;
	}
	arena_shrink(a, p, n);
	*ret = p;
	*ret_len = n;
	return 0;
}

int zchange_unpack(struct arena *a, const uint8_t *src, size_t len, const uint8_t **ret,
		   size_t *ret_len)
{
	struct ctxs *x = thread_ctxs();
	*ret = NULL;
	*ret_len = 0;
	if (!x || (!x->d && !(x->d = ZSTD_createDCtx())))
		return -ENOMEM;
	unsigned long long size = ZSTD_getFrameContentSize(src, len);
	/* unknown, an error, or more than any change: not a frame we made */
	if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ||
	    size > ZCHANGE_MAX || ZSTD_findFrameCompressedSize(src, len) != len)
		return -EBADMSG;
	uint8_t *p = arena_alloc(a, size ? (size_t)size : 1);
	if (!p)
		return -ENOMEM;
	size_t n = ZSTD_decompressDCtx(x->d, p, (size_t)size, src, len);
	if (ZSTD_isError(n) || n != size) {
		arena_shrink(a, p, 0);
		return ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ?
			       -ENOMEM : -EBADMSG;
	}
	*ret = p;
	*ret_len = n;
	return 0;
}
