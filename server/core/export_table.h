/* export_table: the long format's tables (export_long.h) as typed columns,
 * for the writers of formats that keep types (XLSX: export_xlsx.c; SPSS
 * and Stata: export_stat.c).
 *
 * Same tables, rows, filters (counties, since, deleted) and sensitive
 * fields as the long CSV. Columns of each table: its keys (records:
 * record_id, form_id, form_version, first_received, last_changed, devices,
 * device_names, deleted, conflict; a group: record_id, instance_id,
 * parent_instance_id when nested, removed when asked), then its exported
 * fields in form order, typed: a geopoint becomes four number columns
 * NAME_latitude, NAME_longitude, NAME_altitude, NAME_accuracy; a choice is
 * its label and a number (choice_value); several choices are their
 * labels joined by "; "; a link is the instance id.
 */
#ifndef SHAHIDI_EXPORT_TABLE_H
#define SHAHIDI_EXPORT_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "form.h"

struct store;
struct export_table;

enum export_kind {
	EK_TEXT,      /* UTF-8 text */
	EK_INT,       /* a whole number */
	EK_NUM,       /* a decimal number */
	EK_BOOL,      /* 0 or 1 */
	EK_DATE,      /* days since 1970-01-01 */
	EK_DATETIME,  /* milliseconds since 1970-01-01T00:00:00Z */
	EK_CHOICE,    /* one choice: its number and its label */
};

struct export_tcol {
	char name[72];                /* as the CSV header names it */
	const char *label;            /* the field's label, or the key's meaning */
	enum export_kind kind;
	const struct form_field *fd;  /* NULL for a key column */
	size_t src;                   /* the export_long column it comes from */
	int part;                     /* geopoint: 0-3 (lat, lon, alt, accuracy) */
	bool int_codes;               /* choice: every code is a decimal number,
					 used as the choice's number */
};

/* A cell of a row: borrowed, valid during the sink's call only. */
struct export_tcell {
	bool empty;
	double num;                   /* every kind but TEXT (CHOICE: its number,
					 empty when the code is not in the form) */
	const char *str;              /* TEXT; CHOICE: the label (the code when
					 the form does not know it). NUL-terminated */
	size_t len;
};

/* Called with each row of table i, n cells in column order. A negative
 * errno stops the export and is returned. */
typedef int (*export_table_sink)(void *ud, size_t table, const struct export_tcell *cells);

/* Prepares the tables of o's form; reads the devices' names from s.
 * -ENOENT with err filled when the form is not loaded. forms must outlive
 * the table. */
int export_table_new(const struct form_registry *forms, const struct export_opts *o,
		     struct store *s, struct export_table **ret, char *err, size_t errlen);
void export_table_free(struct export_table *t);

size_t export_table_count(const struct export_table *t);
const char *export_table_name(const struct export_table *t, size_t i);  /* "records" */
const char *export_table_label(const struct export_table *t, size_t i); /* "Records" */
size_t export_table_ncols(const struct export_table *t, size_t i);
const struct export_tcol *export_table_col(const struct export_table *t, size_t i, size_t c);

/* The number a choice code stands for in a column of kind EK_CHOICE: the
 * code itself when every code is a decimal number (counties: 42), else its
 * position in the form's list, from 1. 0 when the code is unknown. */
int32_t export_table_choice_value(const struct export_tcol *c, const char *code, size_t len);

/* Hands the rows of the next records after *cursor to sink, reading at
 * most max_scan stored records in one read transaction. As
 * export_long_page(): the number of records, *ret_done at the end. */
int64_t export_table_page(struct export_table *t, struct store *s, uint64_t *cursor,
			  size_t max_scan, export_table_sink sink, void *ud, bool *ret_done);

/* Records and instances handed to the sink so far. */
uint64_t export_table_written(const struct export_table *t);

#endif
