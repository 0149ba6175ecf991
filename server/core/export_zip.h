/* export_zip: the long format's tables (export_long.h) as one zip archive,
 * written as a stream: records.csv, one CSV per repeat group, then
 * codebook.csv, each deflated (raw deflate, zlib) with a data descriptor
 * after it, then the central directory. Nothing is seeked back over, so
 * the archive can go out on a socket as it is made.
 *
 * Memory stays flat: each page of records is read in one read transaction
 * and split into the tables; records.csv goes out at once, the other
 * tables are deflated into unlinked temporary files in the store's own
 * directory (private, like the store) and copied out, a piece at a time,
 * after the scan. No entry may pass 4 GiB (no zip64): -EFBIG then.
 */
#ifndef SHAHIDI_EXPORT_ZIP_H
#define SHAHIDI_EXPORT_ZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "export.h"

struct store;
struct export_zip;

/* As export_long_new(). */
int export_zip_new(const struct form_registry *forms, const struct export_opts *o,
		   struct export_zip **ret, char *err, size_t errlen);
void export_zip_free(struct export_zip *z);

/* Appends the next piece of the archive to out: the records of one page
 * (at most max_scan read), or up to about 1 MiB of a spooled table, or the
 * end. *ret_done is set with the last piece. 0 or a negative errno. */
int export_zip_next(struct export_zip *z, struct store *s, size_t max_scan, struct buf *out,
		    bool *ret_done);

/* Records written so far. */
uint64_t export_zip_written(const struct export_zip *z);

#endif
