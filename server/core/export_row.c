/* export: a stored record read without decoding it all, and written as a
 * CSV row or an NDJSON line (export_int.h); set-up and paging are in
 * export.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "export_int.h"
#include "merge.h"
#include "recpack.h"
#include "render.h"
#include "uuid.h"
#include "wire.h"

static const struct label *label_find(const struct column *c, const uint8_t *code, size_t len)
{
	if (!c->n_labels)
		return NULL;
	size_t k = export__code_hash(code, len) & (c->n_labels - 1);
	for (; c->labels[k].code; k = (k + 1) & (c->n_labels - 1))
		if (c->labels[k].code_len == len && !memcmp(c->labels[k].code, code, len))
			return &c->labels[k];
	return NULL;
}

/* ---- reading a stored record without decoding it all ---- */


/* The column of an exported field, by its number; NULL if not exported. */
static const struct slot *slot_find(const struct exporter *x, uint32_t number)
{
	size_t lo = 0, hi = x->n_slots;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (x->slots[mid].number == number)
			return &x->slots[mid];
		if (x->slots[mid].number < number)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Column + 1 of an exported field, 0 if it is not exported. */
static inline uint32_t col_of(const struct exporter *x, uint32_t number)
{
	if (number < x->n_col_of)
		return x->col_of[number];
	const struct slot *s = slot_find(x, number);
	return s ? s->col + 1 : 0;
}

/* A field's value, for its column and the county filter. */
static int view_cell(struct renderer *rd, struct view *v, uint32_t field, const uint8_t *inst,
		     const uint8_t *val, size_t vlen)
{
	const struct exporter *x = rd->x;
	struct form_value fv;
	if (inst) {
		uint32_t col = field ? col_of(x, field) : 0;
		if (x->o.format == EXPORT_CSV || (field && (!col || !x->cols[col - 1].group)))
			return 0; /* CSV: export_long.c's; not exported; not a group's */
		if (rd->n_ic == rd->cap_ic) {
			size_t cap = rd->cap_ic ? rd->cap_ic * 2 : 64;
			struct icell *ni = realloc(rd->ic, cap * sizeof(*ni));
			if (!ni)
				return -ENOMEM;
			rd->ic = ni;
			rd->cap_ic = cap;
		}
		rd->ic[rd->n_ic++] = (struct icell){inst, field, col, val, vlen};
		return 0;
	}
	if (field == x->county_field && form_value_parse(val, vlen, &fv) == 0 &&
	    fv.kind == FT_CHOICE && fv.str_len == 3) {
		memcpy(v->county, fv.str, 3);
		v->county[3] = 0;
	}
	uint32_t col = col_of(x, field);
	if (col) {
		rd->cell[col - 1] = val ? val : (const uint8_t *)"";
		rd->cell_len[col - 1] = vlen;
	}
	return 0;
}

/* What recpack_view() and wire_each_write() hand over, to view_cell. */
struct view_walk {
	struct renderer *rd;
	struct view *v;
	const uint8_t *rec; /* an edited record's bytes, whose registers win */
	size_t rec_len;
};

static bool view_want(void *arg, uint32_t field)
{
	const struct exporter *x = ((struct view_walk *)arg)->rd->x;
	return field == x->county_field || col_of(x, field);
}

static int view_value(void *arg, const struct recpack_value *rv)
{
	struct view_walk *w = arg;
	if (rv->field == MERGE_DELETION_FIELD && !rv->instance) {
		w->v->deleted = form_value_is_true(rv->value, rv->value_len);
		return 0;
	}
	return view_cell(w->rd, w->v, rv->field, rv->instance, rv->value, rv->value_len);
}

static int view_write(void *arg, uint32_t field, const uint8_t *inst, const uint8_t *val,
		      size_t vlen)
{
	struct view_walk *w = arg;
	if (w->rec && recpack_holds(w->rec, w->rec_len, field, inst))
		return 0; /* edited since: the record's register says */
	return view_cell(w->rd, w->v, field, inst, val, vlen);
}

/* A pointer record's fields: the writes of the one change that made it;
 * an edited record's (base, its bytes rec[0..rec_len)) those of its first
 * change that it holds no register of. */
static int view_change(struct renderer *rd, const uint8_t *p, size_t n, struct view *v,
		       bool base, const uint8_t *rec, size_t rec_len)
{
	struct view_walk w = {rd, v, base ? rec : NULL, rec_len};
	return wire_each_write(p, n, view_write, &w);
}

static int view_parse(struct renderer *rd, const uint8_t *p, size_t n, struct view *v)
{
	static const struct recpack_view_ops ops = {view_want, view_value};
	const struct exporter *x = rd->x;
	struct view_walk w = {rd, v, NULL, 0};
	struct recpack_view rv;
	memset(v, 0, sizeof(*v));
	memset(rd->cell, 0, x->n_cols * sizeof(*rd->cell));
	rd->n_ic = 0;
	int r = recpack_view(p, n, &ops, &w, &rv);
	v->id = rv.record_id;
	v->id_len = rv.record_id_len;
	v->form_id = rv.form_id;
	v->form_len = rv.form_id_len;
	v->form_version = rv.form_version;
	v->writers = rv.writers;
	v->writers_len = rv.writers_len;
	v->conflicts = rv.conflicts;
	v->first_ms = rv.first_received_ms;
	v->last_ms = rv.last_changed_ms;
	v->base = rv.base_log_seq != 0;
	return r;
}

/* ---- writing ---- */

static const char *label_of(const struct column *c, const uint8_t *code, size_t len)
{
	const struct label *l = label_find(c, code, len);
	return l ? l->text : NULL;
}

static int put_i64(struct buf *out, int64_t v);
static void time_text(struct renderer *rd, uint64_t ms, char out[32]);

static int csv_cell(struct renderer *rd, const struct column *c, const uint8_t *v, size_t n,
		    struct buf *out)
{
	struct form_value fv;
	if (form_value_parse(v, n, &fv) < 0)
		return export_csv_field(out, (const uint8_t *)"[malformed]", 11);
	int r = 0;
	switch (fv.kind) {
	case FT_NONE:
		return 0;
	case FT_TEXT:
		/* Text from the field may start with = + - @: spreadsheets would
		 * run it as a formula (CSV injection). A leading ' keeps it text. */
		if (fv.str_len && strchr("=+-@\t\r", fv.str[0])) {
			buf_reset(&rd->tmp);
			if ((r = buf_putc(&rd->tmp, '\'')) < 0 ||
			    (r = buf_append(&rd->tmp, fv.str, fv.str_len)) < 0)
				return r;
			return export_csv_field(out, rd->tmp.data, rd->tmp.len);
		}
		return export_csv_field(out, fv.str, fv.str_len);
	case FT_DATE:
		return export_csv_field(out, fv.str, fv.str_len);
	case FT_CHOICE: {
		const struct label *l = label_find(c, fv.str, fv.str_len);
		return l ? buf_append(out, l->csv, l->csv_len)
			 : export_csv_field(out, fv.str, fv.str_len);
	}
	case FT_CHOICES: {
		size_t pos = 0, len, k = 0;
		const uint8_t *code;
		buf_reset(&rd->tmp);
		while (r >= 0 && form_value_next_choice(&fv, &pos, &code, &len) > 0) {
			const char *l = label_of(c, code, len);
			if (k++)
				r = buf_append(&rd->tmp, "; ", 2);
			if (r >= 0)
				r = l ? buf_puts(&rd->tmp, l) : buf_append(&rd->tmp, code, len);
		}
		break;
	}
	case FT_INTEGER:
		return put_i64(out, fv.i);
	case FT_BOOLEAN:
		return buf_puts(out, fv.b ? "yes" : "no");
	case FT_DATETIME: {
		char t[32];
		time_text(rd, (uint64_t)fv.i, t);
		return buf_puts(out, t);
	}
	default:
		buf_reset(&rd->tmp);
		r = render_value_text(c->fd, v, n, true, &rd->tmp);
		break;
	}
	if (r < 0)
		return r;
	return export_csv_field(out, rd->tmp.data, rd->tmp.len);
}

static int json_cell(struct renderer *rd, const struct column *c, const uint8_t *v, size_t n,
		     struct buf *out)
{
	struct form_value fv;
	char num[64];
	if (form_value_parse(v, n, &fv) < 0)
		return buf_puts(out, "null");
	switch (fv.kind) {
	case FT_NONE:
		return buf_puts(out, "null");
	case FT_TEXT:
	case FT_DATE:
	case FT_CHOICE:
		return export_json_string(out, fv.str, fv.str_len);
	case FT_INTEGER:
		return put_i64(out, fv.i);
	case FT_DECIMAL:
		snprintf(num, sizeof(num), "%.17g", fv.d);
		return buf_puts(out, num);
	case FT_BOOLEAN:
		return buf_puts(out, fv.b ? "true" : "false");
	case FT_DATETIME:
		time_text(rd, (uint64_t)fv.i, num);
		return export_json_string(out, (const uint8_t *)num, strlen(num));
	case FT_CHOICES: {
		size_t pos = 0, len, k = 0;
		const uint8_t *code;
		int r = buf_putc(out, '[');
		while (r >= 0 && form_value_next_choice(&fv, &pos, &code, &len) > 0) {
			if (k++)
				r = buf_putc(out, ',');
			if (r >= 0)
				r = export_json_string(out, code, len);
		}
		return r < 0 ? r : buf_putc(out, ']');
	}
	default: {
		/* points, attachments, sealed values: rare, and jansson does them */
		json_t *j = render_value_json(c->fd, v, n);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		int r = s ? buf_puts(out, s) : buf_puts(out, "null");
		free(s);
		json_decref(j);
		return r;
	}
	}
}

/* render_time_ms, reusing the date and time of the second before. */
static void time_text(struct renderer *rd, uint64_t ms, char out[32])
{
	uint64_t sec = ms / 1000;
	if (sec != rd->time_sec || !rd->time_text[0]) {
		render_time_ms(sec * 1000, rd->time_text);
		rd->time_sec = sec;
	}
	memcpy(out, rd->time_text, 32);
	unsigned m = (unsigned)(ms % 1000); /* "...:SS.mmmZ" */
	size_t n = strlen(out);
	if (n >= 5) {
		out[n - 4] = (char)('0' + m / 100);
		out[n - 3] = (char)('0' + m / 10 % 10);
		out[n - 2] = (char)('0' + m % 10);
	}
}

static int put_u64(struct buf *out, uint64_t v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[sizeof(tmp) - 1 - (size_t)n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return buf_append(out, tmp + sizeof(tmp) - n, (size_t)n);
}

static int put_i64(struct buf *out, int64_t v)
{
	if (v < 0) {
		int r = buf_putc(out, '-');
		return r < 0 ? r : put_u64(out, (uint64_t)0 - (uint64_t)v);
	}
	return put_u64(out, (uint64_t)v);
}

static int write_devices(const struct view *v, bool csv, struct buf *out)
{
	char hex[17];
	int r = 0;
	for (size_t i = 0; i + 8 <= v->writers_len && r >= 0; i += 8) {
		uint64_t d = 0;
		for (int b = 7; b >= 0; b--)
			d = (d << 8) | v->writers[i + (size_t)b];
		sh_device_fmt(d, hex);
		if (i)
			r = buf_putc(out, csv ? ' ' : ',');
		if (r >= 0 && !csv)
			r = buf_putc(out, '"');
		if (r >= 0)
			r = buf_append(out, hex, 16);
		if (r >= 0 && !csv)
			r = buf_putc(out, '"');
	}
	return r;
}

/* The names of the record's devices: one CSV field ("; " between), or JSON
 * strings separated by commas. */
static int device_names(struct renderer *rd, const struct view *v, bool csv, struct buf *out)
{
	int r = 0;
	buf_reset(&rd->tmp);
	for (size_t i = 0; i + 8 <= v->writers_len && r >= 0; i += 8) {
		uint64_t d = 0;
		char hex[17];
		for (int b = 7; b >= 0; b--)
			d = (d << 8) | v->writers[i + (size_t)b];
		const char *name = export_dev_name(rd->x->devs, d);
		if (!name) { /* a device the store does not know: its id */
			sh_device_fmt(d, hex);
			name = hex;
		}
		if (csv) {
			if (i)
				r = buf_append(&rd->tmp, "; ", 2);
			if (r >= 0)
				r = buf_puts(&rd->tmp, name);
		} else {
			if (i)
				r = buf_putc(out, ',');
			if (r >= 0)
				r = export_json_string(out, (const uint8_t *)name, strlen(name));
		}
	}
	if (r >= 0 && csv) {
		/* names are typed at enrolment: kept from running as formulas too */
		if (rd->tmp.len && strchr("=+-@\t\r", rd->tmp.data[0]) &&
		    (r = buf_putc(&rd->tmp, 0)) >= 0) {
			memmove(rd->tmp.data + 1, rd->tmp.data, rd->tmp.len - 1);
			rd->tmp.data[0] = '\'';
		}
		if (r >= 0)
			r = export_csv_field(out, rd->tmp.data, rd->tmp.len);
	}
	return r;
}

static int cmp_icell(const void *a, const void *b)
{
	const struct icell *x = a, *y = b;
	int c = memcmp(x->inst, y->inst, 16);
	return c ? c : x->field < y->field ? -1 : x->field > y->field;
}

/* NDJSON: ,"victims":[{"instance_id":ID,"removed":B,FIELDS},...] when the
 * record has instances of group g (index + 1); removed ones only with
 * include_deleted. rd->ic is sorted by (instance, field). */
static int json_group(struct renderer *rd, uint32_t g, struct buf *out)
{
	const struct exporter *x = rd->x;
	char id[UUID_STR_LEN + 1];
	size_t k = 0;
	int r = 0;
	for (size_t i = 0, j; i < rd->n_ic && r >= 0; i = j) {
		bool removed = false, ours = false;
		for (j = i; j < rd->n_ic && !memcmp(rd->ic[j].inst, rd->ic[i].inst, 16); j++) {
			const struct icell *c = &rd->ic[j];
			if (!c->field)
				removed = form_value_is_true(c->v, c->len);
			else if (x->cols[c->col - 1].group == g)
				ours = true;
		}
		if (!ours || (removed && !x->o.include_deleted))
			continue;
		uuid_fmt(rd->ic[i].inst, id);
		if (!k++) /* the group's key before its first instance */
			r = buf_printf(out, ",\"%s\":[", x->groups[g - 1]);
		else
			r = buf_putc(out, ',');
		if (r >= 0)
			r = buf_printf(out, "{\"instance_id\":\"%s\",\"removed\":%s", id,
				       removed ? "true" : "false");
		for (size_t m = i; m < j && r >= 0; m++) {
			const struct icell *c = &rd->ic[m];
			if (!c->field)
				continue;
			const struct column *col = &x->cols[c->col - 1];
			if ((r = buf_putc(out, ',')) >= 0 &&
			    (r = buf_append(out, col->json_key, col->json_key_len)) >= 0)
				r = json_cell(rd, col, c->v, c->len, out);
		}
		if (r >= 0)
			r = buf_putc(out, '}');
	}
	return k && r >= 0 ? buf_putc(out, ']') : r;
}

static int write_record(struct renderer *rd, const struct view *v, struct buf *out)
{
	const struct exporter *x = rd->x;
	char id[UUID_STR_LEN + 1] = "", t1[32], t2[32];
	bool csv = x->o.format == EXPORT_CSV;
	int r;
	if (v->id_len == 16)
		uuid_fmt(v->id, id);
	time_text(rd, v->first_ms, t1);
	time_text(rd, v->last_ms, t2);
	if (csv) {
		/* by hand, not printf: this runs for every record exported */
		if ((r = buf_reserve(out, 200)) < 0)
			return r;
		buf_append(out, id, strlen(id));
		buf_putc(out, ',');
		buf_puts(out, x->form_id);
		buf_putc(out, ',');
		put_u64(out, v->form_version);
		buf_putc(out, ',');
		buf_puts(out, t1);
		buf_putc(out, ',');
		buf_puts(out, t2);
		buf_putc(out, ',');
		r = write_devices(v, true, out);
		if (r >= 0)
			r = buf_puts(out, v->deleted ? ",yes" : ",no");
		if (r >= 0)
			r = buf_puts(out, v->conflicts ? ",yes," : ",no,");
		if (r >= 0)
			r = device_names(rd, v, true, out);
		for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
			const struct column *col = &x->cols[c];
			if (col->sensitive && !x->o.include_sensitive)
				continue;
			if ((r = buf_putc(out, ',')) < 0)
				break;
			if (rd->cell[c])
				r = csv_cell(rd, col, rd->cell[c], rd->cell_len[c], out);
			if (r >= 0 && col->fd->type == FT_GEOPOINT)
				r = export_geo_csv(rd->cell[c], rd->cell_len[c], out);
		}
		return r < 0 ? r : buf_append(out, "\r\n", 2);
	}
	/* by hand too, for the same reason */
	if ((r = buf_reserve(out, 256)) < 0)
		return r;
	buf_puts(out, "{\"record_id\":\"");
	buf_puts(out, id);
	buf_puts(out, "\",\"form_id\":");
	export_json_string(out, (const uint8_t *)x->form_id, strlen(x->form_id));
	buf_puts(out, ",\"form_version\":");
	put_u64(out, v->form_version);
	buf_puts(out, ",\"first_received\":\"");
	buf_puts(out, t1);
	buf_puts(out, "\",\"last_changed\":\"");
	buf_puts(out, t2);
	r = buf_puts(out, "\",\"devices\":[");
	if (r >= 0)
		r = write_devices(v, false, out);
	if (r >= 0)
		r = buf_puts(out, "],\"device_names\":[");
	if (r >= 0)
		r = device_names(rd, v, false, out);
	if (r >= 0)
		r = buf_puts(out, v->deleted ? "],\"deleted\":true" : "],\"deleted\":false");
	if (r >= 0)
		r = buf_puts(out, v->conflicts ? ",\"conflict\":true,\"fields\":{"
					       : ",\"conflict\":false,\"fields\":{");
	size_t k = 0;
	for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
		if (!rd->cell[c] || x->cols[c].group)
			continue;
		const struct column *col = &x->cols[c];
		if (k++ && (r = buf_putc(out, ',')) < 0)
			break;
		if ((r = buf_append(out, col->json_key, col->json_key_len)) < 0)
			break;
		r = json_cell(rd, col, rd->cell[c], rd->cell_len[c], out);
	}
	if (r >= 0)
		r = buf_putc(out, '}');
	if (rd->n_ic) /* a pointer record's writes come in the change's order */
		qsort(rd->ic, rd->n_ic, sizeof(*rd->ic), cmp_icell);
	for (size_t g = 0; g < x->n_groups && rd->n_ic && r >= 0; g++)
		r = json_group(rd, (uint32_t)g + 1, out);
	return r < 0 ? r : buf_append(out, "}\n", 2);
}
static bool wanted(const struct exporter *x, const struct view *v)
{
	if (v->form_len != strlen(x->form_id) || memcmp(v->form_id, x->form_id, v->form_len))
		return false;
	if (v->deleted && !x->o.include_deleted)
		return false;
	if (v->last_ms < x->o.since_ms)
		return false;
	if (x->o.n_counties) {
		for (size_t i = 0; i < x->o.n_counties; i++)
			if (!strcmp(x->o.counties[i], v->county))
				return true;
		return false;
	}
	return true;
}
/* Renders records [from, to) of the page into out. */
int export__render_range(struct renderer *rd, const struct stored *recs, size_t from, size_t to,
			 struct buf *out, int64_t *ret_written)
{
	const struct exporter *x = rd->x;
	int64_t written = 0;
	int r = 0;
	for (size_t i = from; i < to; i++) {
		const struct stored *sr = &recs[i];
		struct view v;
		if ((r = view_parse(rd, sr->data, sr->len, &v)) < 0)
			return r;
		if (sr->change && (r = view_change(rd, sr->change, sr->change_len, &v, v.base,
						   sr->data, sr->len)) < 0)
			return r;
		if (!wanted(x, &v))
			continue;
		if ((r = write_record(rd, &v, out)) < 0)
			return r;
		written++;
	}
	*ret_written = written;
	return 0;
}
