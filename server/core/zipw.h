/* zipw: a zip archive written as a stream of STORED entries, each followed
 * by a data descriptor, then the central directory. Nothing is seeked back
 * over, so the archive can go out on a socket as it is made. Entries are
 * not compressed: what goes in (photos, PDFs, voice notes) is compressed
 * already, and deflating it again would cost a core for nothing.
 *
 * ZIP64 where it is needed, and only there: an entry of 4 GiB or more (its
 * local header and descriptor carry 64-bit sizes), an entry that starts
 * past 4 GiB (its central record carries the offset in a zip64 field), a
 * central directory past 4 GiB or 65535 entries or more (the zip64 end
 * records). Archives that need none of it are plain zip 2.0.
 *
 * Memory: one small record per entry (for the central directory).
 */
#ifndef SHAHIDI_ZIPW_H
#define SHAHIDI_ZIPW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define ZIPW_NAME_MAX 80

struct zipw_entry {
	char name[ZIPW_NAME_MAX];
	uint32_t crc;
	uint64_t size, offset;
	bool z64;                     /* sizes in zip64 form from its local header on */
};

struct zipw {
	uint64_t pos;                 /* where the next byte goes in the archive */
	struct zipw_entry *e;         /* owned: the entries closed so far */
	size_t n, cap;
	struct zipw_entry cur;        /* the entry being written */
	uint64_t promised;            /* cur's size as zipw_begin was told */
	bool open;
	uint16_t dos_time, dos_date;
};

/* An empty archive that starts at byte start of its output (0; the unit
 * test starts past 4 GiB to see the zip64 offsets without 4 GiB of data).
 * Stamps entries with the time now (UTC). */
void zipw_init(struct zipw *z, uint64_t start);
void zipw_free(struct zipw *z);

/* Starts an entry: its local header onto out. size: the bytes it will
 * hold (4 GiB or more: a zip64 entry). name: at most ZIPW_NAME_MAX - 1
 * bytes, UTF-8. -EINVAL (name, or an entry open), -ENOMEM. */
int zipw_begin(struct zipw *z, const char *name, uint64_t size, struct buf *out);
/* n bytes of the open entry, which the caller put out itself (read
 * straight into its buffer): counted and added to the CRC-32. */
void zipw_data(struct zipw *z, const void *p, size_t n);
/* Ends the entry: its data descriptor onto out. -EIO when it holds a size
 * other than zipw_begin was told (a file that changed while read). */
int zipw_end(struct zipw *z, struct buf *out);
/* The central directory and the end records onto out. */
int zipw_finish(struct zipw *z, struct buf *out);

#endif
