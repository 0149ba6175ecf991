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

/* ---- rows for writers of other formats (export_xlsx.c, export_stat.c) ----
 *
 * The same tables, rows and filters, handed to a callback instead of
 * written as CSV. Columns of table i are numbered 0..export_long_columns()
 * (sensitive ones included: export_long_column says whether each is
 * exported, and its cell is always empty when not). */

/* A value as stored (an encoded shahidi.v1.Value); v NULL: empty. */
struct export_long_cell {
	const uint8_t *v;
	size_t len;
};

/* One row: borrowed, valid during the callback only. */
struct export_long_row {
	size_t table;                 /* 0: records */
	const uint8_t *record_id;     /* 16 bytes */
	const uint8_t *instance_id;   /* 16 bytes; NULL in records */
	const uint8_t *parent_id;     /* nested group: the parent instance, or NULL */
	bool removed;                 /* an instance removed (include_deleted) */
	/* records only */
	uint32_t form_version;
	uint64_t first_ms, last_ms;
	const uint64_t *writers;      /* devices that wrote the record */
	size_t n_writers;
	bool deleted, conflict;
	const struct export_long_cell *cells; /* export_long_columns() of them */
};

/* Called for each row, the records row before its instances' rows; a
 * negative errno stops the page and is returned by it. */
typedef int (*export_long_sink)(void *ud, const struct export_long_row *row);

size_t export_long_columns(const struct export_long *x, size_t table);
/* Column c of table i: its definition (newest version) and *ret_out, true
 * when it is exported (not sensitive, or sensitive fields asked for). */
const struct form_field *export_long_column(const struct export_long *x, size_t table, size_t c,
					    bool *ret_out);
/* The table's label ("Victims"), and whether it nests in a parent group
 * (its rows have a parent_instance_id). */
const char *export_long_table_label(const struct export_long *x, size_t table);
bool export_long_nested(const struct export_long *x, size_t table);
bool export_long_include_deleted(const struct export_long *x);

/* As export_long_page(), the rows handed to sink. */
int64_t export_long_page_rows(struct export_long *x, struct store *s, uint64_t *cursor,
			      size_t max_scan, export_long_sink sink, void *ud, bool *ret_done);

/* Records and instances written so far. */
uint64_t export_long_written(const struct export_long *x);
uint64_t export_long_instances(const struct export_long *x);

#endif
