/* export: merged current records as CSV (RFC 4180) or NDJSON, streamed.
 *
 * The caller asks for pages; each page is read in its own short read
 * transaction and resumes after the last record of the previous one, so
 * an export of any size runs in constant memory and never pins old pages
 * while the server writes (LMDB's long-reader caveat).
 *
 * CSV: one row per record; the record's id, form version, first receipt,
 * last change, devices, deletion and conflict flags, the devices' names,
 * then one column per field of the form in form order (the union of every
 * loaded version: records of several versions export side by side),
 * choice labels not codes, several choices joined by "; ", a point as
 * "lat,lon" then its four numbers in columns of their own. NDJSON: one
 * object per line with typed values and choice codes. Fields marked sensitive are left out
 * unless asked for.
 */
#ifndef SHAHIDI_EXPORT_H
#define SHAHIDI_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "form.h"

struct store;

enum export_format {
	EXPORT_CSV,
	EXPORT_NDJSON,
	/* whole files, written by export_xlsx.c and export_stat.c from the long
	 * format's tables (export_table.h); export_new() refuses them */
	EXPORT_XLSX,
	EXPORT_SAV,
	EXPORT_DTA,
};

/* "csv", "ndjson", "xlsx", "sav", "dta": for the audit log and file names. */
const char *export_format_name(enum export_format f);

struct export_opts {
	enum export_format format;
	const char *form_id;          /* which form (default incident_report) */
	const char *const *counties;  /* only these counties; NULL/0 = all */
	size_t n_counties;
	uint64_t since_ms;            /* only records changed at or after */
	bool include_deleted;
	bool include_sensitive;
	unsigned threads;             /* rendering threads; 0 = one per core, at
					 most EXPORT_MAX_THREADS */
};

#define EXPORT_MAX_THREADS 8

struct exporter;

/* Prepares an export: the columns, from the loaded versions of the form.
 * -ENOENT with err filled when the form is not loaded. */
int export_new(const struct form_registry *forms, const struct export_opts *o,
	       struct exporter **ret, char *err, size_t errlen);
void export_free(struct exporter *x);

/* Appends a UTF-8 byte order mark and the CSV header line (nothing for
 * NDJSON). */
int export_header(struct exporter *x, struct buf *out);

/* Appends the next records after *cursor (0 = the first), reading at most
 * max_scan stored records in one read transaction and rendering them on
 * o.threads threads, in order. Advances *cursor; *ret_done is set at the
 * end. Returns the number of records written. Not reentrant: one call at
 * a time per exporter. */
int64_t export_page(struct exporter *x, struct store *s, uint64_t *cursor, size_t max_scan,
		    struct buf *out, bool *ret_done);

/* Records written and stored records read so far. */
uint64_t export_written(const struct exporter *x);
uint64_t export_scanned(const struct exporter *x);

/* The columns a geopoint field NAME adds after its own ("lat,lon"):
 * NAME_latitude, NAME_longitude, NAME_altitude, NAME_accuracy. */
extern const char *const export_geo_parts[4];
/* Appends the four numbers of an encoded geopoint value, each after a
 * comma (",,,," when v is not a point). */
int export_geo_csv(const uint8_t *v, size_t n, struct buf *out);

/* RFC 4180 quoting: appends s as one CSV field. */
int export_csv_field(struct buf *out, const uint8_t *s, size_t n);
/* Appends s as a JSON string, with quotes. s is UTF-8. */
int export_json_string(struct buf *out, const uint8_t *s, size_t n);

#endif
