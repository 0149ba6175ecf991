/* export_xlsx: the long format's tables as one Excel workbook (XLSX),
 * written with libxlsxwriter: one sheet per table (records, then one per
 * repeat group, as export_long.h), typed cells (export_table.h: numbers,
 * TRUE/FALSE, dates and date-times as Excel dates in UTC, choice labels,
 * text always as text, so "=1+2" is never run as a formula), and a
 * "codebook" sheet describing every column.
 *
 * Memory stays flat: libxlsxwriter's constant_memory mode keeps one row
 * per sheet in memory and the rest in unlinked temporary files in tmpdir
 * (give the store's own, private directory: they hold the records), then
 * zips them into the workbook at the end. A sheet holds at most 1,048,575
 * rows (Excel's limit): beyond, -EFBIG and nothing kept.
 */
#ifndef SHAHIDI_EXPORT_XLSX_H
#define SHAHIDI_EXPORT_XLSX_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

struct store;

/* Writes the workbook of o's records to path, created or truncated with
 * mode 0600. On failure path is removed and err says why. *ret_records:
 * the records written. 0 or a negative errno (-ENOENT: form not loaded,
 * -EFBIG: a table over Excel's row limit). */
int export_xlsx_write(const struct form_registry *forms, const struct export_opts *o,
		      struct store *s, const char *path, const char *tmpdir,
		      uint64_t *ret_records, char *err, size_t errlen);

#endif
