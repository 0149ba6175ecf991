/* export_long: the long format -- one CSV table per repeat group beside
 * records.csv, and a codebook -- streamed page by page.
 *
 * Tables: "records" (the record's own fields, as export.c writes them),
 * then one per repeat group of any loaded version of the form, in
 * definition order ("victims", "perpetrators", ...), each row keyed by
 * record_id and instance_id, plus parent_instance_id for a nested group
 * (the value of its parent_field), and "removed" when removed instances
 * are asked for (include_deleted); removed instances are left out
 * otherwise. Choice labels, sensitive columns left out unless asked,
 * formula escaping: as export.c. A page's rows of every table come from
 * one read transaction, so a record's instances are exported as of the
 * same moment as the record itself.
 *
 * The codebook (export_long_codebook) describes every column of every
 * table: table, column, field number, type, label, choices (code=label
 * joined by "; "), sensitive yes/no.
 */
#ifndef SHAHIDI_EXPORT_LONG_H
#define SHAHIDI_EXPORT_LONG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "export.h"
#include "form.h"

struct store;
struct export_long;

/* Prepares a long export from o (format is ignored: always CSV tables).
 * -ENOENT with err filled when the form is not loaded. The registry must
 * outlive the exporter. */
int export_long_new(const struct form_registry *forms, const struct export_opts *o,
		    struct export_long **ret, char *err, size_t errlen);
void export_long_free(struct export_long *x);

/* Number of data tables (records and the groups; the codebook is apart)
 * and the name of table i ("records", "victims", ...). Owned by x. */
size_t export_long_tables(const struct export_long *x);
const char *export_long_table(const struct export_long *x, size_t i);

/* Appends the byte order mark and header line of table i. */
int export_long_header(struct export_long *x, size_t i, struct buf *out);

/* Appends the rows of the next records after *cursor (0 = the first),
 * reading at most max_scan stored records in one read transaction: table
 * i's rows go to outs[i] (export_long_tables() buffers). Advances *cursor,
 * sets *ret_done at the end. Returns the number of records written. */
int64_t export_long_page(struct export_long *x, struct store *s, uint64_t *cursor,
			 size_t max_scan, struct buf *outs, bool *ret_done);

/* Appends codebook.csv whole (byte order mark, header, one row a column). */
int export_long_codebook(const struct export_long *x, struct buf *out);

/* Records and instances written so far. */
uint64_t export_long_written(const struct export_long *x);
uint64_t export_long_instances(const struct export_long *x);

#endif
