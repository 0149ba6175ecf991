/* zchange: a change's bytes as the log keeps them.
 *
 * The log holds every change as received (LogEntry.change). A change of
 * ZCHANGE_FROM bytes or more would put its entry over LMDB's largest node
 * (about 2 KB on 4 KB pages) and take overflow pages of its own: 4 KB
 * written for 2.3 KB, and 42% of the entries of a fleet's v3 reports with
 * repeat groups. Such a change is kept as one zstd frame
 * (LogEntry.change_zstd) when that is smaller; readers get the bytes as
 * received back (store_log_get, store_log_change), and the hash chain and
 * each change's digest are over those bytes, so compression is invisible
 * to custody. Smaller changes stay as they are: compressing every change
 * cost 8-23% of the push rate on two cores for 23% fewer log bytes, where
 * the large ones alone save the overflow pages at a fraction of the CPU.
 *
 * Each thread keeps its own zstd contexts (made on first use, freed when
 * the thread ends): no lock between the pool threads that compress pushes
 * and the readers that decompress.
 */
#ifndef SHAHIDI_ZCHANGE_H
#define SHAHIDI_ZCHANGE_H

#include <stddef.h>
#include <stdint.h>

struct arena;

/* Changes shorter than this are kept as they are: an entry's own fields
 * take about 100 bytes, and LMDB's largest node on 4 KB pages about 2020. */
#define ZCHANGE_FROM 1800u

/* No change decodes to more than this (a frame that says so is corrupt):
 * far above the largest batch a server accepts inflated. */
#define ZCHANGE_MAX (64u << 20)

/* Compresses len bytes at src into a. *ret (owned by a) is the frame; NULL
 * with *ret_len 0 when len is under ZCHANGE_FROM or the frame would not be
 * smaller by at least a few bytes: keep the bytes as they are. 0 or
 * -ENOMEM. */
int zchange_pack(struct arena *a, const uint8_t *src, size_t len, const uint8_t **ret,
		 size_t *ret_len);

/* The bytes a frame made by zchange_pack holds, into a (*ret owned by a).
 * -EBADMSG: not such a frame, or it says more than ZCHANGE_MAX (corruption
 * or tampering); -ENOMEM. */
int zchange_unpack(struct arena *a, const uint8_t *src, size_t len, const uint8_t **ret,
		   size_t *ret_len);

#endif
