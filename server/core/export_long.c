#include "export_long.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "export_dev.h"
#include "merge.h"
#include "render.h"
#include "store.h"
#include "uuid.h"

struct xl_col {
	uint32_t number;
	const char *name;
	bool sensitive;               /* in any version */
	const struct form_field *fd;  /* the newest version's definition */
};

struct xl_table {
	const char *name;             /* "records" or the group's name */
	const char *label;
	uint32_t parent_field;        /* nested group: the LINK to its parent */
	struct xl_col *cols;          /* every field, in form order */
	size_t n_cols;
	const merge_entry_t **cell; /* per column: the current value */
	struct export_long_cell *sc;  /* the same, for a sink */
};

/* Where a field number is exported: table + 1 and column (0: nowhere). */
struct xl_where {
	uint32_t table, col;
};

struct export_long {
	struct export_opts o;
	const struct form_registry *forms;
	char *form_id;
	const struct form *newest;
	struct xl_table *t;
	size_t n_t;
	struct xl_where *where;       /* by field number, up to max_number */
	uint32_t max_number;
	struct arena *a;
	struct buf tmp;
	uint64_t written, instances;
	struct export_dev *devs;      /* device names: read by the first page */
	export_long_sink sink;        /* set during export_long_page_rows */
	void *sink_ud;
};

/* ---- set-up ---- */

static int table_of(struct export_long *x, const char *name, const char *label)
{
	for (size_t i = 0; i < x->n_t; i++)
		if (!strcmp(x->t[i].name, name))
			return (int)i;
	struct xl_table *nt = realloc(x->t, (x->n_t + 1) * sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	x->t = nt;
	nt[x->n_t] = (struct xl_table){.name = name, .label = label};
	return (int)x->n_t++;
}

/* Adds fd to table t after column *after (as export.c orders the union of
 * versions: each version's new fields after the field preceding them). */
static int col_add(struct xl_table *t, const struct form_field *fd, size_t *after)
{
	for (size_t i = 0; i < t->n_cols; i++)
		if (t->cols[i].number == fd->number) {
			t->cols[i].fd = fd;
			t->cols[i].sensitive |= fd->sensitive;
			*after = i + 1;
			return 0;
		}
	struct xl_col *nc = realloc(t->cols, (t->n_cols + 1) * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	t->cols = nc;
	memmove(&nc[*after + 1], &nc[*after], (t->n_cols - *after) * sizeof(*nc));
	nc[*after] = (struct xl_col){fd->number, fd->name, fd->sensitive, fd};
	t->n_cols++;
	(*after)++;
	return 0;
}

int export_long_new(const struct form_registry *forms, const struct export_opts *o,
		    struct export_long **ret, char *err, size_t errlen)
{
	struct export_long *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->o = *o;
	x->forms = forms;
	const char *fid = o->form_id ? o->form_id : "incident_report";
	int r = -ENOMEM;
	if (!(x->form_id = strdup(fid)) || !(x->a = arena_new()) ||
	    table_of(x, "records", "Records") < 0)
		goto fail;
	x->o.form_id = x->form_id;
	for (size_t v = 0; v < form_registry_count(forms); v++) {
		const struct form *f = form_registry_at(forms, v);
		if (strcmp(f->form_id, fid))
			continue;
		x->newest = f; /* sorted by version */
		for (size_t g = 0; g < f->n_groups; g++)
			if (table_of(x, f->groups[g].name, f->groups[g].label) < 0)
				goto fail;
		size_t n_t = x->n_t, *after = calloc(n_t, sizeof(*after));
		if (!after)
			goto fail;
		for (size_t i = 0; i < f->n_fields; i++) {
			const struct form_field *fd = &f->fields[i];
			int ti = fd->group ? table_of(x, fd->group->name, fd->group->label) : 0;
			if (ti < 0 || (size_t)ti >= n_t) { /* a group f does not declare */
				free(after);
				goto fail;
			}
			if (fd->number > x->max_number)
				x->max_number = fd->number;
			/* after is per table; a table found here is one of f's groups */
			if (col_add(&x->t[ti], fd, &after[ti]) < 0) {
				free(after);
				goto fail;
			}
		}
		free(after);
		for (size_t g = 0; g < f->n_groups; g++)
			if (f->groups[g].parent_field)
				x->t[table_of(x, f->groups[g].name, NULL)].parent_field =
					f->groups[g].parent_field->number;
	}
	if (!x->newest) {
		snprintf(err, errlen, "form %s is not loaded", fid);
		r = -ENOENT;
		goto fail;
	}
	if (!(x->where = calloc((size_t)x->max_number + 1, sizeof(*x->where))))
		goto fail;
	for (size_t ti = 0; ti < x->n_t; ti++) {
		struct xl_table *t = &x->t[ti];
		if (!(t->cell = calloc(t->n_cols ? t->n_cols : 1, sizeof(*t->cell))) ||
		    !(t->sc = calloc(t->n_cols ? t->n_cols : 1, sizeof(*t->sc))))
			goto fail;
		for (size_t c = 0; c < t->n_cols; c++)
			x->where[t->cols[c].number] = (struct xl_where){(uint32_t)ti + 1, (uint32_t)c};
	}
	*ret = x;
	return 0;
fail:
	export_long_free(x);
	return r;
}

void export_long_free(struct export_long *x)
{
	if (!x)
		return;
	for (size_t i = 0; i < x->n_t; i++) {
		free(x->t[i].cols);
		free(x->t[i].cell);
		free(x->t[i].sc);
	}
	free(x->t);
	free(x->where);
	export_dev_free(x->devs);
	free(x->form_id);
	arena_free(x->a);
	buf_free(&x->tmp);
	free(x);
}

size_t export_long_tables(const struct export_long *x)
{
	return x->n_t;
}

const char *export_long_table(const struct export_long *x, size_t i)
{
	return i < x->n_t ? x->t[i].name : NULL;
}

uint64_t export_long_written(const struct export_long *x)
{
	return x->written;
}

uint64_t export_long_instances(const struct export_long *x)
{
	return x->instances;
}

static bool col_out(const struct export_long *x, const struct xl_col *c)
{
	return !c->sensitive || x->o.include_sensitive;
}

static int put_name(struct buf *out, const struct xl_col *c)
{
	int r = buf_putc(out, ',');
	if (r >= 0)
		r = export_csv_field(out, (const uint8_t *)c->name, strlen(c->name));
	/* a point also as four numbers, as export.c */
	for (int k = 0; k < 4 && r >= 0 && c->fd->type == FT_GEOPOINT; k++)
		r = buf_printf(out, ",%s_%s", c->name, export_geo_parts[k]);
	return r;
}

int export_long_header(struct export_long *x, size_t i, struct buf *out)
{
	const struct xl_table *t = &x->t[i];
	int r = buf_puts(out, "\xef\xbb\xbf");
	if (r >= 0 && i == 0)
		r = buf_puts(out, "record_id,form_id,form_version,first_received,last_changed,"
				  "devices,deleted,conflict,device_names");
	else if (r >= 0) {
		r = buf_puts(out, "record_id,instance_id");
		if (r >= 0 && t->parent_field)
			r = buf_puts(out, ",parent_instance_id");
		if (r >= 0 && x->o.include_deleted)
			r = buf_puts(out, ",removed");
	}
	for (size_t c = 0; c < t->n_cols && r >= 0; c++)
		if (col_out(x, &t->cols[c]))
			r = put_name(out, &t->cols[c]);
	return r < 0 ? r : buf_append(out, "\r\n", 2);
}

/* ---- rows ---- */

static int cell_text(struct export_long *x, const struct form_field *fd,
		     const merge_entry_t *e, struct buf *out)
{
	struct form_value fv;
	buf_reset(&x->tmp);
	if (form_value_parse(e->value.data, e->value.len, &fv) == 0 && fv.kind == FT_TEXT &&
	    fv.str_len && strchr("=+-@\t\r", fv.str[0])) {
		/* a spreadsheet would run it as a formula: as export.c */
		int r = buf_putc(&x->tmp, '\'');
		if (r < 0)
			return r;
	}
	int r = render_value_text(fd, e->value.data, e->value.len, true, &x->tmp);
	return r < 0 ? r : export_csv_field(out, x->tmp.data, x->tmp.len);
}

static int put_cells(struct export_long *x, const struct xl_table *t, struct buf *out)
{
	int r = 0;
	for (size_t c = 0; c < t->n_cols && r >= 0; c++) {
		if (!col_out(x, &t->cols[c]))
			continue;
		if ((r = buf_putc(out, ',')) >= 0 && t->cell[c])
			r = cell_text(x, t->cols[c].fd, t->cell[c], out);
		if (r >= 0 && t->cols[c].fd->type == FT_GEOPOINT)
			r = t->cell[c] ? export_geo_csv(t->cell[c]->value.data, t->cell[c]->value.len, out)
				       : buf_append(out, ",,,,", 4);
	}
	return r < 0 ? r : buf_append(out, "\r\n", 2);
}

static int put_uuid(struct buf *out, const uint8_t *id)
{
	char s[UUID_STR_LEN + 1];
	uuid_fmt(id, s);
	return buf_puts(out, s);
}

/* Hands table ti's current cells to the sink, row holding the rest. */
static int sink_row(struct export_long *x, size_t ti, struct export_long_row *row)
{
	struct xl_table *t = &x->t[ti];
	for (size_t c = 0; c < t->n_cols; c++) {
		const merge_entry_t *e = col_out(x, &t->cols[c]) ? t->cell[c] : NULL;
		t->sc[c] = e ? (struct export_long_cell){e->value.data, e->value.len}
			     : (struct export_long_cell){NULL, 0};
	}
	row->table = ti;
	row->cells = t->sc;
	return x->sink(x->sink_ud, row);
}

static int record_row(struct export_long *x, const merge_rec_t *rec, struct buf *out)
{
	struct xl_table *t = &x->t[0];
	char t1[32], t2[32], dev[17];
	if (x->sink) {
		memset(t->cell, 0, t->n_cols * sizeof(*t->cell));
		for (size_t c = 0; c < t->n_cols; c++)
			t->cell[c] = merge_current(merge_register(rec, t->cols[c].number));
		struct export_long_row row = {
			.record_id = rec->record_id.data, .form_version = rec->form_version,
			.first_ms = rec->first_received_ms, .last_ms = rec->last_changed_ms,
			.writers = rec->writers, .n_writers = rec->n_writers,
			.deleted = merge_is_deleted(rec), .conflict = rec->conflicts != 0,
		};
		return sink_row(x, 0, &row);
	}
	render_time_ms(rec->first_received_ms, t1);
	render_time_ms(rec->last_changed_ms, t2);
	int r = put_uuid(out, rec->record_id.data);
	if (r >= 0)
		r = buf_printf(out, ",%s,%u,%s,%s,", x->form_id, rec->form_version, t1, t2);
	for (size_t i = 0; i < rec->n_writers && r >= 0; i++) {
		sh_device_fmt(rec->writers[i], dev);
		r = buf_printf(out, "%s%s", i ? " " : "", dev);
	}
	if (r >= 0)
		r = buf_printf(out, ",%s,%s,", merge_is_deleted(rec) ? "yes" : "no",
			       rec->conflicts ? "yes" : "no");
	if (r >= 0) {
		buf_reset(&x->tmp);
		r = export_dev_names(x->devs, rec->writers, rec->n_writers, &x->tmp);
		/* names are typed at enrolment: kept from running as formulas too */
		if (r >= 0 && x->tmp.len && strchr("=+-@\t\r", x->tmp.data[0]) &&
		    (r = buf_putc(&x->tmp, 0)) >= 0) {
			memmove(x->tmp.data + 1, x->tmp.data, x->tmp.len - 1);
			x->tmp.data[0] = '\'';
		}
		if (r >= 0)
			r = export_csv_field(out, x->tmp.data, x->tmp.len);
	}
	if (r < 0)
		return r;
	memset(t->cell, 0, t->n_cols * sizeof(*t->cell));
	for (size_t c = 0; c < t->n_cols; c++)
		t->cell[c] = merge_current(merge_register(rec, t->cols[c].number));
	return put_cells(x, t, out);
}

/* The instance whose registers are regs[0..n) (sorted by field). */
static int instance_rows(struct export_long *x, const merge_rec_t *rec, merge_reg_t *const *regs,
			 size_t n, struct buf *outs)
{
	const uint8_t *id = regs[0]->instance.data;
	uint32_t ti = 0;
	for (size_t i = 0; i < n && !ti; i++)
		if (regs[i]->field && regs[i]->field <= x->max_number)
			ti = x->where[regs[i]->field].table;
	if (ti <= 1)
		return 0; /* only a removal, or fields of no group we know */
	struct xl_table *t = &x->t[ti - 1];
	bool removed = merge_instance_removed(rec, id);
	if (removed && !x->o.include_deleted)
		return 0;
	memset(t->cell, 0, t->n_cols * sizeof(*t->cell));
	for (size_t i = 0; i < n; i++) {
		uint32_t f = regs[i]->field;
		if (f && f <= x->max_number && x->where[f].table == ti)
			t->cell[x->where[f].col] = merge_current(regs[i]);
	}
	if (x->sink) {
		struct export_long_row row = {.record_id = rec->record_id.data, .instance_id = id,
					      .removed = removed};
		for (size_t i = 0; t->parent_field && i < n; i++) {
			const merge_entry_t *e = regs[i]->field == t->parent_field ? merge_current(regs[i])
										 : NULL;
			struct form_value fv;
			if (e && form_value_parse(e->value.data, e->value.len, &fv) == 0 &&
			    fv.kind == FT_LINK && fv.str_len == 16)
				row.parent_id = fv.str;
		}
		int r = sink_row(x, ti - 1, &row);
		if (r >= 0)
			x->instances++;
		return r;
	}
	struct buf *out = &outs[ti - 1];
	int r = put_uuid(out, rec->record_id.data);
	if (r >= 0)
		r = buf_putc(out, ',');
	if (r >= 0)
		r = put_uuid(out, id);
	if (r >= 0 && t->parent_field) {
		const merge_entry_t *e = NULL;
		for (size_t i = 0; i < n; i++)
			if (regs[i]->field == t->parent_field)
				e = merge_current(regs[i]);
		struct form_value fv;
		r = buf_putc(out, ',');
		if (r >= 0 && e && form_value_parse(e->value.data, e->value.len, &fv) == 0 &&
		    fv.kind == FT_LINK && fv.str_len == 16)
			r = put_uuid(out, fv.str);
	}
	if (r >= 0 && x->o.include_deleted)
		r = buf_puts(out, removed ? ",yes" : ",no");
	if (r >= 0)
		r = put_cells(x, t, out);
	if (r >= 0)
		x->instances++;
	return r;
}

static bool wanted(struct export_long *x, const merge_rec_t *rec)
{
	if (!rec->form_id || strcmp(rec->form_id, x->form_id))
		return false;
	if (merge_is_deleted(rec) && !x->o.include_deleted)
		return false;
	if (rec->last_changed_ms < x->o.since_ms)
		return false;
	if (!x->o.n_counties)
		return true;
	char county[4];
	const struct form *f = form_registry_find(x->forms, x->form_id, rec->form_version);
	if (render_record_county(rec, f ? f : x->newest, county) < 0)
		return false;
	for (size_t i = 0; i < x->o.n_counties; i++)
		if (!strcmp(x->o.counties[i], county))
			return true;
	return false;
}

static int record_rows(struct export_long *x, const merge_rec_t *rec, struct buf *outs)
{
	int r = record_row(x, rec, outs); /* outs: NULL for a sink */
	/* Registers sort with the record's own first, then by instance and
	 * field: an instance's registers are one run. */
	for (size_t i = 0; i < rec->n_registers && r >= 0;) {
		if (!merge_reg_in_instance(rec->registers[i])) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < rec->n_registers && merge_reg_in_instance(rec->registers[j]) &&
		       !memcmp(rec->registers[j]->instance.data, rec->registers[i]->instance.data, 16))
			j++;
		r = instance_rows(x, rec, &rec->registers[i], j - i, outs);
		i = j;
	}
	return r;
}

int64_t export_long_page(struct export_long *x, struct store *s, uint64_t *cursor,
			 size_t max_scan, struct buf *outs, bool *ret_done)
{
	struct store_txn *t;
	int64_t written = 0;
	/* device names for records.csv (a sink has its own, export_table.c) */
	int r = x->devs || x->sink ? 0 : export_dev_load(s, &x->devs);
	if (r < 0 || (r = store_begin(s, false, &t)) < 0)
		return r;
	*ret_done = false;
	for (size_t n = 0; n < max_scan; n++) {
		merge_rec_t *rec;
		uint64_t seq = *cursor;
		arena_reset(x->a);
		if ((r = store_record_next(t, x->a, &seq, &rec)) < 0)
			break;
		if (r == 0) {
			*ret_done = true;
			break;
		}
		*cursor = seq;
		if (!wanted(x, rec))
			continue;
		if ((r = record_rows(x, rec, outs)) < 0)
			break;
		written++;
	}
	store_abort(t);
	if (r < 0)
		return r;
	x->written += (uint64_t)written;
	return written;
}

int64_t export_long_page_rows(struct export_long *x, struct store *s, uint64_t *cursor,
			      size_t max_scan, export_long_sink sink, void *ud, bool *ret_done)
{
	x->sink = sink;
	x->sink_ud = ud;
	int64_t r = export_long_page(x, s, cursor, max_scan, NULL, ret_done);
	x->sink = NULL;
	x->sink_ud = NULL;
	return r;
}

size_t export_long_columns(const struct export_long *x, size_t table)
{
	return table < x->n_t ? x->t[table].n_cols : 0;
}

const struct form_field *export_long_column(const struct export_long *x, size_t table, size_t c,
					    bool *ret_out)
{
	const struct xl_col *col = &x->t[table].cols[c];
	*ret_out = col_out(x, col);
	return col->fd;
}

const char *export_long_table_label(const struct export_long *x, size_t table)
{
	return x->t[table].label ? x->t[table].label : x->t[table].name;
}

bool export_long_nested(const struct export_long *x, size_t table)
{
	return x->t[table].parent_field != 0;
}

bool export_long_include_deleted(const struct export_long *x)
{
	return x->o.include_deleted;
}

/* ---- codebook ---- */

int export_long_codebook(const struct export_long *x, struct buf *out)
{
	struct buf ch = {0};
	int r = buf_puts(out, "\xef\xbb\xbf"
			      "table,column,field_number,type,label,choices,sensitive\r\n");
	for (size_t ti = 0; ti < x->n_t && r >= 0; ti++) {
		const struct xl_table *t = &x->t[ti];
		/* the key columns first */
		static const char *const keys[][2] = {
			{"record_id", "Record id (UUID)"},
			{"instance_id", "Instance id (UUID)"},
			{"parent_instance_id", "The parent instance's id (UUID)"},
		};
		for (size_t k = 0; k < 3 && r >= 0; k++) {
			if ((k == 1 && !ti) || (k == 2 && !t->parent_field))
				continue;
			r = buf_printf(out, "%s,%s,,id,", t->name, keys[k][0]);
			if (r >= 0)
				r = export_csv_field(out, (const uint8_t *)keys[k][1],
						     strlen(keys[k][1]));
			if (r >= 0)
				r = buf_puts(out, ",,no\r\n");
		}
		if (ti == 0 && r >= 0)
			r = buf_puts(out, "records,device_names,,text,Devices that wrote the record "
					  "(names),,no\r\n");
		for (size_t c = 0; c < t->n_cols && r >= 0; c++) {
			const struct xl_col *col = &t->cols[c];
			const struct form_field *fd = col->fd;
			if (col->sensitive && !x->o.include_sensitive)
				continue;
			buf_reset(&ch);
			for (size_t i = 0; i < fd->n_choices && r >= 0; i++)
				r = buf_printf(&ch, "%s%s=%s", i ? "; " : "", fd->choices[i].code,
					       fd->choices[i].label);
			if (r >= 0)
				r = buf_printf(out, "%s,%s,%u,%s,", t->name, col->name, col->number,
					       form_type_name(fd->type));
			if (r >= 0)
				r = export_csv_field(out, (const uint8_t *)fd->label, strlen(fd->label));
			if (r >= 0)
				r = buf_putc(out, ',');
			if (r >= 0)
				r = export_csv_field(out, ch.data, ch.len);
			if (r >= 0)
				r = buf_puts(out, col->sensitive ? ",yes\r\n" : ",no\r\n");
			for (int k = 0; k < 4 && r >= 0 && fd->type == FT_GEOPOINT; k++) {
				r = buf_printf(out, "%s,%s_%s,%u,decimal,", t->name, col->name,
					       export_geo_parts[k], col->number);
				buf_reset(&ch);
				if (r >= 0)
					r = buf_printf(&ch, "%s (%s)", fd->label, export_geo_parts[k]);
				if (r >= 0)
					r = export_csv_field(out, ch.data, ch.len);
				if (r >= 0)
					r = buf_puts(out, col->sensitive ? ",,yes\r\n" : ",,no\r\n");
			}
		}
	}
	buf_free(&ch);
	return r < 0 ? r : 0;
}
