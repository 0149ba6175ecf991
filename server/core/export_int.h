/* export_int.h: what export.c (set-up, the page pipeline) and export_row.c
 * (a stored record read and written as a row) share. Private to export. */
#ifndef SHAHIDI_EXPORT_INT_H
#define SHAHIDI_EXPORT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "export_dev.h"
#include "export.h"
#include "form.h"

/* A choice's label, found by its code in a small hash table: the export
 * looks one up for most fields of every record. */
struct label {
	const char *code;             /* NULL: empty slot */
	size_t code_len;
	const char *text;             /* the label */
	char *csv;                    /* the label as a CSV field (owned) */
	size_t csv_len;
};

struct column {
	uint32_t number;
	const char *name;
	bool sensitive;               /* in any version */
	const struct form_field *fd;  /* the newest version's definition */
	struct label *labels;         /* n_labels slots, a power of two; owned */
	size_t n_labels;
	char *json_key;               /* "name": (owned) */
	size_t json_key_len;
	uint32_t group;               /* a repeat group's field (NDJSON only):
					 its index in groups + 1; 0: the record's */
};

/* A value of an instance (NDJSON nests them under their group's name). */
struct icell {
	const uint8_t *inst;          /* 16 bytes */
	uint32_t field, col;          /* col + 1, 0 for field 0 (the removal) */
	const uint8_t *v;
	size_t len;
};

#define EXPORT_MAX_GROUPS 64

struct slot {
	uint32_t number;
	uint32_t col;
};

/* One stored record of the page being exported: borrowed from the map,
 * valid while the page's read transaction is open (a compressed change:
 * from the exporter's page_arena, valid until the next page). */
struct stored {
	const uint8_t *data;
	size_t len;
	const uint8_t *change;        /* a pointer record's change, or NULL */
	size_t change_len;
};

/* What each rendering thread has of its own. */
struct renderer {
	const struct exporter *x;
	const uint8_t **cell;         /* per column: current value of a record */
	size_t *cell_len;
	struct buf tmp;
	struct icell *ic;             /* the record's instance values */
	size_t n_ic, cap_ic;
	uint64_t time_sec;            /* render_time_ms is slow: cache the */
	char time_text[32];           /* date and time of the last second seen */
};

/* A chunk of a page, rendered. */
struct chunk {
	struct buf out;
	int64_t written;
	int r;
};

struct exporter {
	struct export_opts o;
	char *form_id;
	uint32_t county_field;        /* 0: none */
	struct column *cols;          /* every field, in form order */
	size_t n_cols;
	struct slot *slots;           /* exported columns by field number */
	size_t n_slots;
	uint32_t *col_of;             /* by field number below n_col_of: column
					 + 1 if exported, else 0 */
	uint32_t n_col_of;
	const char *groups[EXPORT_MAX_GROUPS]; /* NDJSON: names, union order */
	size_t n_groups;
	struct renderer *rd;          /* o.threads of them */
	struct stored *page;          /* the records of the current page */
	struct arena *page_arena;     /* owned: the page's compressed changes,
					 decoded */
	size_t page_cap;
	struct chunk *chunks;         /* page_cap / CHUNK of them, rounded up */
	struct export_dev *devs;      /* device names: read by the first page */
	size_t n_chunks;
	uint64_t written, scanned;
};

struct view {
	const uint8_t *id;
	size_t id_len;
	const uint8_t *form_id;
	size_t form_len;
	uint64_t form_version, first_ms, last_ms, conflicts;
	const uint8_t *writers;   /* packed fixed64 */
	size_t writers_len;
	bool deleted;
	bool base;                /* keeps its first change's registers in the log
				     (recpack_view's base_log_seq) */
	char county[4];
};

static inline uint32_t export__code_hash(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* Renders records [from, to) of the page into out (export_row.c). */
int export__render_range(struct renderer *rd, const struct stored *recs, size_t from, size_t to,
			 struct buf *out, int64_t *ret_written);

#endif
