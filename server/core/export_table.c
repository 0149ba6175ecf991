#include "export_table.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "export_dev.h"
#include "export_long.h"
#include "render.h"
#include "store.h"
#include "uuid.h"

/* The key columns (export_tcol.src when fd is NULL). */
enum {
	K_RECORD_ID,
	K_FORM_ID,
	K_FORM_VERSION,
	K_FIRST,
	K_LAST,
	K_DEVICES,
	K_DEVICE_NAMES,
	K_DELETED,
	K_CONFLICT,
	K_INSTANCE_ID,
	K_PARENT_ID,
	K_REMOVED,
};

static const struct {
	const char *name, *label;
	enum export_kind kind;
} keys[] = {
	[K_RECORD_ID] = {"record_id", "Record id (UUID)", EK_TEXT},
	[K_FORM_ID] = {"form_id", "Form", EK_TEXT},
	[K_FORM_VERSION] = {"form_version", "Form version", EK_INT},
	[K_FIRST] = {"first_received", "First received (UTC)", EK_DATETIME},
	[K_LAST] = {"last_changed", "Last changed (UTC)", EK_DATETIME},
	[K_DEVICES] = {"devices", "Devices that wrote the record (ids)", EK_TEXT},
	[K_DEVICE_NAMES] = {"device_names", "Devices that wrote the record (names)", EK_TEXT},
	[K_DELETED] = {"deleted", "Deleted", EK_BOOL},
	[K_CONFLICT] = {"conflict", "Has a conflict to resolve", EK_BOOL},
	[K_INSTANCE_ID] = {"instance_id", "Instance id (UUID)", EK_TEXT},
	[K_PARENT_ID] = {"parent_instance_id", "The parent instance's id (UUID)", EK_TEXT},
	[K_REMOVED] = {"removed", "Instance removed", EK_BOOL},
};

struct et_table {
	struct export_tcol *cols;
	size_t n_cols;
};

struct export_table {
	struct export_long *x;
	char *form_id;
	struct et_table *t;
	size_t n_t;
	struct export_dev *devs;
	struct export_tcell *cells;   /* a row's, max_cols of them */
	size_t *soff;                 /* per cell: its string's offset in sb */
	size_t max_cols;
	struct buf sb, tmp;           /* a row's strings; scratch */
	export_table_sink sink;
	void *ud;
	uint64_t written;
};

#define NO_STR ((size_t)-1)

/* ---- set-up ---- */

static int col_push(struct et_table *t, const struct export_tcol *c)
{
	struct export_tcol *nc = realloc(t->cols, (t->n_cols + 1) * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	t->cols = nc;
	nc[t->n_cols++] = *c;
	return 0;
}

static int key_push(struct et_table *t, int k)
{
	struct export_tcol c = {.label = keys[k].label, .kind = keys[k].kind, .src = (size_t)k};
	snprintf(c.name, sizeof(c.name), "%s", keys[k].name);
	return col_push(t, &c);
}

static bool codes_are_numbers(const struct form_field *fd)
{
	if (!fd->n_choices)
		return false;
	for (size_t i = 0; i < fd->n_choices; i++) {
		const char *s = fd->choices[i].code;
		size_t n = strlen(s);
		if (!n || n > 9 || strspn(s, "0123456789") != n)
			return false;
	}
	return true;
}

static int field_push(struct et_table *t, const struct form_field *fd, size_t src)
{
	static const char *const parts[] = {"latitude", "longitude", "altitude", "accuracy"};
	struct export_tcol c = {.label = fd->label, .fd = fd, .src = src};
	snprintf(c.name, sizeof(c.name), "%s", fd->name);
	switch (fd->type) {
	case FT_INTEGER: c.kind = EK_INT; break;
	case FT_DECIMAL: c.kind = EK_NUM; break;
	case FT_BOOLEAN: c.kind = EK_BOOL; break;
	case FT_DATE: c.kind = EK_DATE; break;
	case FT_DATETIME: c.kind = EK_DATETIME; break;
	case FT_CHOICE:
		c.kind = EK_CHOICE;
		c.int_codes = codes_are_numbers(fd);
		break;
	case FT_GEOPOINT:
		for (int p = 0; p < 4; p++) {
			c.kind = EK_NUM;
			c.part = p;
			snprintf(c.name, sizeof(c.name), "%.50s_%s", fd->name, parts[p]);
			int r = col_push(t, &c);
			if (r < 0)
				return r;
		}
		return 0;
	default: c.kind = EK_TEXT; break;
	}
	return col_push(t, &c);
}

int export_table_new(const struct form_registry *forms, const struct export_opts *o,
		     struct store *s, struct export_table **ret, char *err, size_t errlen)
{
	struct export_table *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	int r = export_long_new(forms, o, &t->x, err, errlen);
	if (r < 0)
		goto fail;
	r = -ENOMEM;
	if (!(t->form_id = strdup(o->form_id ? o->form_id : "incident_report")))
		goto fail;
	t->n_t = export_long_tables(t->x);
	if (!(t->t = calloc(t->n_t, sizeof(*t->t))))
		goto fail;
	for (size_t i = 0; i < t->n_t; i++) {
		struct et_table *tb = &t->t[i];
		static const int rec_keys[] = {K_RECORD_ID, K_FORM_ID,	    K_FORM_VERSION,
					       K_FIRST,	    K_LAST,	    K_DEVICES,
					       K_DEVICE_NAMES, K_DELETED, K_CONFLICT};
		if (i == 0) {
			for (size_t k = 0; k < sizeof(rec_keys) / sizeof(*rec_keys); k++)
				if ((r = key_push(tb, rec_keys[k])) < 0)
					goto fail;
		} else {
			if ((r = key_push(tb, K_RECORD_ID)) < 0 || (r = key_push(tb, K_INSTANCE_ID)) < 0)
				goto fail;
			if (export_long_nested(t->x, i) && (r = key_push(tb, K_PARENT_ID)) < 0)
				goto fail;
			if (export_long_include_deleted(t->x) && (r = key_push(tb, K_REMOVED)) < 0)
				goto fail;
		}
		for (size_t c = 0; c < export_long_columns(t->x, i); c++) {
			bool out;
			const struct form_field *fd = export_long_column(t->x, i, c, &out);
			if (out && (r = field_push(tb, fd, c)) < 0)
				goto fail;
		}
		t->max_cols = SH_MAX(t->max_cols, tb->n_cols);
	}
	r = -ENOMEM;
	if (!(t->cells = calloc(t->max_cols, sizeof(*t->cells))) ||
	    !(t->soff = calloc(t->max_cols, sizeof(*t->soff))))
		goto fail;
	if ((r = export_dev_load(s, &t->devs)) < 0)
		goto fail;
	*ret = t;
	return 0;
fail:
	export_table_free(t);
	return r;
}

void export_table_free(struct export_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; t->t && i < t->n_t; i++)
		free(t->t[i].cols);
	export_dev_free(t->devs);
	free(t->t);
	free(t->cells);
	free(t->soff);
	free(t->form_id);
	buf_free(&t->sb);
	buf_free(&t->tmp);
	export_long_free(t->x);
	free(t);
}

size_t export_table_count(const struct export_table *t)
{
	return t->n_t;
}

const char *export_table_name(const struct export_table *t, size_t i)
{
	return export_long_table(t->x, i);
}

const char *export_table_label(const struct export_table *t, size_t i)
{
	return export_long_table_label(t->x, i);
}

size_t export_table_ncols(const struct export_table *t, size_t i)
{
	return t->t[i].n_cols;
}

const struct export_tcol *export_table_col(const struct export_table *t, size_t i, size_t c)
{
	return &t->t[i].cols[c];
}

uint64_t export_table_written(const struct export_table *t)
{
	return export_long_written(t->x);
}

int32_t export_table_choice_value(const struct export_tcol *c, const char *code, size_t len)
{
	const struct form_choice *ch = c->fd ? form_choice(c->fd, code, len) : NULL;
	if (!ch)
		return 0;
	if (c->int_codes)
		return (int32_t)strtol(ch->code, NULL, 10);
	return (int32_t)(ch - c->fd->choices) + 1;
}

/* ---- rows ---- */

/* Cell i's text: s[0..n) copied into the row's strings. */
static int put_str(struct export_table *t, size_t i, const void *s, size_t n)
{
	t->soff[i] = t->sb.len;
	t->cells[i].len = n;
	int r = buf_append(&t->sb, s, n);
	return r < 0 ? r : buf_putc(&t->sb, 0);
}

static int put_uuid(struct export_table *t, size_t i, const uint8_t *id)
{
	char s[UUID_STR_LEN + 1];
	if (!id) {
		t->cells[i].empty = true;
		return 0;
	}
	uuid_fmt(id, s);
	return put_str(t, i, s, UUID_STR_LEN);
}

static int key_cell(struct export_table *t, size_t i, int k, const struct export_long_row *row)
{
	struct export_tcell *c = &t->cells[i];
	char hex[17];
	int r = 0;
	switch (k) {
	case K_RECORD_ID: return put_uuid(t, i, row->record_id);
	case K_INSTANCE_ID: return put_uuid(t, i, row->instance_id);
	case K_PARENT_ID: return put_uuid(t, i, row->parent_id);
	case K_FORM_ID: return put_str(t, i, t->form_id, strlen(t->form_id));
	case K_FORM_VERSION: c->num = row->form_version; return 0;
	case K_FIRST: c->num = (double)row->first_ms; return 0;
	case K_LAST: c->num = (double)row->last_ms; return 0;
	case K_DELETED: c->num = row->deleted; return 0;
	case K_CONFLICT: c->num = row->conflict; return 0;
	case K_REMOVED: c->num = row->removed; return 0;
	case K_DEVICES:
		buf_reset(&t->tmp);
		for (size_t w = 0; w < row->n_writers && r >= 0; w++) {
			sh_device_fmt(row->writers[w], hex);
			if (w)
				r = buf_putc(&t->tmp, ' ');
			if (r >= 0)
				r = buf_append(&t->tmp, hex, 16);
		}
		return r < 0 ? r : put_str(t, i, t->tmp.data, t->tmp.len);
	case K_DEVICE_NAMES:
		buf_reset(&t->tmp);
		r = export_dev_names(t->devs, row->writers, row->n_writers, &t->tmp);
		return r < 0 ? r : put_str(t, i, t->tmp.data, t->tmp.len);
	default: return -EINVAL;
	}
}

static int field_cell(struct export_table *t, size_t i, const struct export_tcol *col,
		      const struct export_long_cell *lc)
{
	struct export_tcell *c = &t->cells[i];
	struct form_value fv;
	struct form_geopoint g;
	int64_t days;
	if (!lc->v || form_value_parse(lc->v, lc->len, &fv) < 0 || fv.kind == FT_NONE) {
		c->empty = true;
		return 0;
	}
	switch (col->kind) {
	case EK_INT:
	case EK_DATETIME:
		if (fv.kind != FT_INTEGER && fv.kind != FT_DATETIME)
			break;
		c->num = (double)fv.i;
		return 0;
	case EK_NUM:
		if (col->fd->type == FT_GEOPOINT) {
			if (fv.kind != FT_GEOPOINT || form_value_geopoint(&fv, &g) < 0)
				break;
			double p[4] = {g.latitude, g.longitude, g.altitude, g.accuracy};
			c->num = p[col->part];
			return 0;
		}
		if (fv.kind == FT_DECIMAL)
			c->num = fv.d;
		else if (fv.kind == FT_INTEGER)
			c->num = (double)fv.i;
		else
			break;
		return 0;
	case EK_BOOL:
		if (fv.kind != FT_BOOLEAN)
			break;
		c->num = fv.b;
		return 0;
	case EK_DATE:
		if (fv.kind != FT_DATE || form_parse_date(fv.str, fv.str_len, &days) < 0)
			break;
		c->num = (double)days;
		return 0;
	case EK_CHOICE: {
		if (fv.kind != FT_CHOICE)
			break;
		const struct form_choice *ch = form_choice(col->fd, (const char *)fv.str, fv.str_len);
		int32_t n = export_table_choice_value(col, (const char *)fv.str, fv.str_len);
		c->num = n ? n : NAN;
		return ch ? put_str(t, i, ch->label, strlen(ch->label)) : put_str(t, i, fv.str, fv.str_len);
	}
	case EK_TEXT:
		if (fv.kind == FT_TEXT)
			return put_str(t, i, fv.str, fv.str_len);
		if (fv.kind == FT_LINK && fv.str_len == 16)
			return put_uuid(t, i, fv.str);
		buf_reset(&t->tmp);
		/* choices (labels joined by "; "), attachments, sealed values: as CSV */
		int r = render_value_text(col->fd, lc->v, lc->len, true, &t->tmp);
		return r < 0 ? r : put_str(t, i, t->tmp.data, t->tmp.len);
	}
	c->empty = true; /* a value of another type than the form's newest (never stored) */
	return 0;
}

static int on_row(void *ud, const struct export_long_row *row)
{
	struct export_table *t = ud;
	const struct et_table *tb = &t->t[row->table];
	int r = 0;
	buf_reset(&t->sb);
	for (size_t i = 0; i < tb->n_cols && r >= 0; i++) {
		const struct export_tcol *col = &tb->cols[i];
		t->cells[i] = (struct export_tcell){0};
		t->soff[i] = NO_STR;
		r = col->fd ? field_cell(t, i, col, &row->cells[col->src])
			    : key_cell(t, i, (int)col->src, row);
	}
	if (r < 0)
		return r;
	/* the strings' buffer has stopped moving: now point into it */
	for (size_t i = 0; i < tb->n_cols; i++)
		if (t->soff[i] != NO_STR)
			t->cells[i].str = (const char *)t->sb.data + t->soff[i];
	return t->sink(t->ud, row->table, t->cells);
}

int64_t export_table_page(struct export_table *t, struct store *s, uint64_t *cursor,
			  size_t max_scan, export_table_sink sink, void *ud, bool *ret_done)
{
	t->sink = sink;
	t->ud = ud;
	return export_long_page_rows(t->x, s, cursor, max_scan, on_row, t, ret_done);
}
