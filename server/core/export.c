#include "export.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "common.h"
#include "render.h"
#include "store.h"
#include "uuid.h"

struct column {
	uint32_t number;
	const char *name;
	bool sensitive;               /* in any version */
	const struct form_field *fd;  /* the newest version's definition */
};

struct slot {
	uint32_t number;
	uint32_t col;
};

struct exporter {
	struct export_opts o;
	uint64_t time_sec;            /* render_time_ms is slow: cache the */
	char time_text[32];           /* date and time of the last second seen */
	char *form_id;
	uint32_t county_field;        /* 0: none */
	struct column *cols;          /* every field, in form order */
	size_t n_cols;
	struct slot *slots;           /* exported columns by field number */
	size_t n_slots;
	const uint8_t **cell;         /* per column: current value of a record */
	size_t *cell_len;
	struct buf tmp;
	uint64_t written, scanned;
};

/* ---- set-up ---- */

static const struct form_field *find_in(const struct column *cols, size_t n, uint32_t number,
					size_t *ret_at)
{
	for (size_t i = 0; i < n; i++)
		if (cols[i].number == number) {
			*ret_at = i;
			return cols[i].fd;
		}
	return NULL;
}

static int cmp_slot(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;
	return x->number < y->number ? -1 : x->number > y->number;
}

int export_new(const struct form_registry *forms, const struct export_opts *o,
	       struct exporter **ret, char *err, size_t errlen)
{
	struct exporter *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->o = *o;
	const char *fid = o->form_id ? o->form_id : "incident_report";
	int r = -ENOMEM;
	if (!(x->form_id = strdup(fid)))
		goto fail;
	x->o.form_id = x->form_id;

	/* The union of every version's fields: each version's new fields go
	 * after the field that precedes them in that version. */
	for (size_t v = 0; v < form_registry_count(forms); v++) {
		const struct form *f = form_registry_at(forms, v);
		if (strcmp(f->form_id, fid))
			continue;
		if (f->county_field)
			x->county_field = f->county_field->number;
		size_t after = 0;
		for (size_t i = 0; i < f->n_fields; i++) {
			const struct form_field *fd = &f->fields[i];
			size_t at;
			if (find_in(x->cols, x->n_cols, fd->number, &at)) {
				x->cols[at].fd = fd; /* newer wording wins */
				x->cols[at].sensitive |= fd->sensitive;
				after = at + 1;
				continue;
			}
			struct column *nc = realloc(x->cols, (x->n_cols + 1) * sizeof(*nc));
			if (!nc)
				goto fail;
			x->cols = nc;
			memmove(&nc[after + 1], &nc[after], (x->n_cols - after) * sizeof(*nc));
			nc[after] = (struct column){.number = fd->number, .name = fd->name,
						    .sensitive = fd->sensitive, .fd = fd};
			x->n_cols++;
			after++;
		}
	}
	if (!x->n_cols) {
		snprintf(err, errlen, "form %s is not loaded", fid);
		r = -ENOENT;
		goto fail;
	}
	x->slots = calloc(x->n_cols, sizeof(*x->slots));
	x->cell = calloc(x->n_cols, sizeof(*x->cell));
	x->cell_len = calloc(x->n_cols, sizeof(*x->cell_len));
	if (!x->slots || !x->cell || !x->cell_len)
		goto fail;
	for (size_t i = 0; i < x->n_cols; i++) {
		struct column *c = &x->cols[i];
		if (c->sensitive && !o->include_sensitive)
			continue;
		x->slots[x->n_slots++] = (struct slot){c->number, (uint32_t)i};
	}
	qsort(x->slots, x->n_slots, sizeof(*x->slots), cmp_slot);
	*ret = x;
	return 0;
fail:
	export_free(x);
	return r;
}

void export_free(struct exporter *x)
{
	if (!x)
		return;
	free(x->cols);
	free(x->slots);
	free(x->cell);
	free(x->cell_len);
	free(x->form_id);
	buf_free(&x->tmp);
	free(x);
}

uint64_t export_written(const struct exporter *x)
{
	return x->written;
}

uint64_t export_scanned(const struct exporter *x)
{
	return x->scanned;
}

/* ---- quoting ---- */

int export_csv_field(struct buf *out, const uint8_t *s, size_t n)
{
	bool quote = n && (s[0] == ' ' || s[n - 1] == ' ');
	for (size_t i = 0; i < n && !quote; i++)
		quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
	if (!quote)
		return buf_append(out, s, n);
	int r = buf_reserve(out, n * 2 + 2);
	if (r < 0)
		return r;
	uint8_t *p = out->data + out->len;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			*p++ = '"';
		*p++ = s[i];
	}
	*p++ = '"';
	out->len = (size_t)(p - out->data);
	return 0;
}

int export_json_string(struct buf *out, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	int r = buf_reserve(out, n * 6 + 2);
	if (r < 0)
		return r;
	uint8_t *p = out->data + out->len;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = c;
		} else if (c < 0x20) {
			*p++ = '\\';
			switch (c) {
			case '\n': *p++ = 'n'; break;
			case '\r': *p++ = 'r'; break;
			case '\t': *p++ = 't'; break;
			default:
				*p++ = 'u';
				*p++ = '0';
				*p++ = '0';
				*p++ = (uint8_t)hex[c >> 4];
				*p++ = (uint8_t)hex[c & 15];
			}
		} else {
			*p++ = c;
		}
	}
	*p++ = '"';
	out->len = (size_t)(p - out->data);
	return 0;
}

/* ---- reading a stored record without decoding it all ---- */

struct view {
	const uint8_t *id;
	size_t id_len;
	const uint8_t *form_id;
	size_t form_len;
	uint64_t form_version, first_ms, last_ms, conflicts, base_dev, base_hlc;
	const uint8_t *writers;   /* packed fixed64 */
	size_t writers_len;
	bool deleted;
	char county[4];
};

static const struct slot *slot_of(const struct exporter *x, uint32_t number)
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

/* The current value of one register (shahidi.store.v1.Register bytes):
 * the live entry with the greatest (hlc, device), as merge_current(). */
static const struct slot *slot_of(const struct exporter *x, uint32_t number);

static int reg_parse(const struct exporter *x, const uint8_t *p, size_t n, uint64_t base_dev,
		     uint64_t base_hlc, uint32_t *ret_field, const uint8_t **ret_v,
		     size_t *ret_len, bool *ret_found)
{
	struct pb_field f, g;
	size_t pos = 0;
	uint64_t best_hlc = 0, best_dev = 0;
	bool found = false;
	int r;
	*ret_field = 0;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number == 1 && f.wire_type == 0) {
			*ret_field = (uint32_t)f.varint;
			/* The field number comes first: a register nobody exports
			 * (a sensitive field, left out) is not read any further. */
			if (*ret_field && *ret_field != x->county_field && !slot_of(x, *ret_field)) {
				*ret_found = false;
				return 0;
			}
			continue;
		}
		if (f.number != 2 || f.wire_type != 2)
			continue;
		uint64_t dev = 0, hlc = 0;
		bool dead = false, pending = false;
		const uint8_t *v = NULL;
		size_t vlen = 0, p2 = 0;
		while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
			switch (g.number) {
			case 1: dev = g.varint; break;
			case 2: hlc = g.varint; break;
			case 4: dead = g.varint != 0; break;
			case 5: v = g.data; vlen = g.len; break;
			case 7: pending = g.varint != 0; break;
			default: break;
			}
		}
		if (r < 0)
			return r;
		if (dead || pending)
			continue;
		dev = dev ? dev : base_dev; /* stored compactly: see proto/store.proto */
		hlc = hlc ? hlc : base_hlc;
		if (!found || hlc > best_hlc || (hlc == best_hlc && dev > best_dev)) {
			found = true;
			best_hlc = hlc;
			best_dev = dev;
			*ret_v = v;
			*ret_len = vlen;
		}
	}
	*ret_found = found;
	return r;
}

static int view_parse(struct exporter *x, const uint8_t *p, size_t n, struct view *v)
{
	struct pb_field f;
	size_t pos = 0;
	int r;
	memset(v, 0, sizeof(*v));
	memset(x->cell, 0, x->n_cols * sizeof(*x->cell));
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		switch (f.number) {
		/* shahidi.store.v1.Record's field numbers */
		case 1: v->id = f.data; v->id_len = f.len; break;
		case 2: v->form_id = f.data; v->form_len = f.len; break;
		case 3: v->form_version = f.varint; break;
		case 4: v->base_dev = f.varint; break;
		case 5: v->base_hlc = f.varint; break;
		case 7:
			if (f.wire_type == 2) {
				v->writers = f.data;
				v->writers_len = f.len;
			}
			break;
		case 9: v->conflicts = f.varint; break;
		case 11: v->first_ms = f.varint; break;
		case 12: v->last_ms = f.varint; break;
		case 6: {
			uint32_t field;
			const uint8_t *val = NULL;
			size_t vlen = 0;
			bool found;
			if ((r = reg_parse(x, f.data, f.len, v->base_dev, v->base_hlc, &field, &val,
					   &vlen, &found)) < 0)
				return r;
			if (!found)
				break;
			struct form_value fv;
			if (field == 0) {
				v->deleted = form_value_parse(val, vlen, &fv) == 0 &&
					     fv.kind == FT_BOOLEAN && fv.b;
				break;
			}
			if (field == x->county_field && form_value_parse(val, vlen, &fv) == 0 &&
			    fv.kind == FT_CHOICE && fv.str_len == 3) {
				memcpy(v->county, fv.str, 3);
				v->county[3] = 0;
			}
			const struct slot *s = slot_of(x, field);
			if (s) {
				x->cell[s->col] = val ? val : (const uint8_t *)"";
				x->cell_len[s->col] = vlen;
			}
			break;
		}
		default:
			break;
		}
	}
	return r;
}

/* ---- writing ---- */

static const char *label_of(const struct column *c, const uint8_t *code, size_t len, bool labels)
{
	const struct form_choice *ch = form_choice(c->fd, (const char *)code, len);
	return ch ? (labels ? ch->label : ch->code) : NULL;
}

static int csv_cell(struct exporter *x, const struct column *c, const uint8_t *v, size_t n,
		    struct buf *out)
{
	struct form_value fv;
	if (form_value_parse(v, n, &fv) < 0)
		return export_csv_field(out, (const uint8_t *)"[malformed]", 11);
	buf_reset(&x->tmp);
	int r = 0;
	switch (fv.kind) {
	case FT_NONE:
		return 0;
	case FT_TEXT:
		/* Text from the field may start with = + - @: spreadsheets would
		 * run it as a formula (CSV injection). A leading ' keeps it text. */
		if (fv.str_len && strchr("=+-@\t\r", fv.str[0]) && (r = buf_putc(&x->tmp, '\'')) < 0)
			return r;
		r = buf_append(&x->tmp, fv.str, fv.str_len);
		break;
	case FT_CHOICE: {
		const char *l = label_of(c, fv.str, fv.str_len, true);
		r = l ? buf_puts(&x->tmp, l) : buf_append(&x->tmp, fv.str, fv.str_len);
		break;
	}
	case FT_CHOICES: {
		size_t pos = 0, len, k = 0;
		const uint8_t *code;
		while (r >= 0 && form_value_next_choice(&fv, &pos, &code, &len) > 0) {
			const char *l = label_of(c, code, len, true);
			if (k++)
				r = buf_append(&x->tmp, "; ", 2);
			if (r >= 0)
				r = l ? buf_puts(&x->tmp, l) : buf_append(&x->tmp, code, len);
		}
		break;
	}
	default:
		r = render_value_text(c->fd, v, n, true, &x->tmp);
		break;
	}
	if (r < 0)
		return r;
	return export_csv_field(out, x->tmp.data, x->tmp.len);
}

static int json_cell(struct exporter *x, const struct column *c, const uint8_t *v, size_t n,
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
		snprintf(num, sizeof(num), "%" PRId64, fv.i);
		return buf_puts(out, num);
	case FT_DECIMAL:
		snprintf(num, sizeof(num), "%.17g", fv.d);
		return buf_puts(out, num);
	case FT_BOOLEAN:
		return buf_puts(out, fv.b ? "true" : "false");
	case FT_DATETIME:
		render_time_ms((uint64_t)fv.i, num);
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
		(void)x;
		return r;
	}
	}
}

/* render_time_ms, reusing the date and time of the second before. */
static void time_text(struct exporter *x, uint64_t ms, char out[32])
{
	uint64_t sec = ms / 1000;
	if (sec != x->time_sec || !x->time_text[0]) {
		render_time_ms(sec * 1000, x->time_text);
		x->time_sec = sec;
	}
	memcpy(out, x->time_text, 32);
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

static int write_record(struct exporter *x, const struct view *v, struct buf *out)
{
	char id[UUID_STR_LEN + 1] = "", t1[32], t2[32];
	bool csv = x->o.format == EXPORT_CSV;
	int r;
	if (v->id_len == 16)
		uuid_fmt(v->id, id);
	time_text(x, v->first_ms, t1);
	time_text(x, v->last_ms, t2);
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
			r = buf_puts(out, v->conflicts ? ",yes" : ",no");
		for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
			const struct column *col = &x->cols[c];
			if (col->sensitive && !x->o.include_sensitive)
				continue;
			if ((r = buf_putc(out, ',')) < 0)
				break;
			if (x->cell[c])
				r = csv_cell(x, col, x->cell[c], x->cell_len[c], out);
		}
		return r < 0 ? r : buf_append(out, "\r\n", 2);
	}
	r = buf_printf(out,
		       "{\"record_id\":\"%s\",\"form_id\":\"%s\",\"form_version\":%" PRIu64
		       ",\"first_received\":\"%s\",\"last_changed\":\"%s\",\"devices\":[",
		       id, x->form_id, v->form_version, t1, t2);
	if (r >= 0)
		r = write_devices(v, false, out);
	if (r >= 0)
		r = buf_printf(out, "],\"deleted\":%s,\"conflict\":%s,\"fields\":{",
			       v->deleted ? "true" : "false", v->conflicts ? "true" : "false");
	size_t k = 0;
	for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
		if (!x->cell[c])
			continue;
		const struct column *col = &x->cols[c];
		r = buf_printf(out, "%s\"%s\":", k++ ? "," : "", col->name);
		if (r >= 0)
			r = json_cell(x, col, x->cell[c], x->cell_len[c], out);
	}
	return r < 0 ? r : buf_append(out, "}}\n", 3);
}

int export_header(struct exporter *x, struct buf *out)
{
	if (x->o.format != EXPORT_CSV)
		return 0;
	int r = buf_puts(out, "record_id,form_id,form_version,first_received,last_changed,devices,"
			      "deleted,conflict");
	for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
		if (x->cols[c].sensitive && !x->o.include_sensitive)
			continue;
		if ((r = buf_putc(out, ',')) >= 0)
			r = export_csv_field(out, (const uint8_t *)x->cols[c].name,
					     strlen(x->cols[c].name));
	}
	return r < 0 ? r : buf_append(out, "\r\n", 2);
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

int64_t export_page(struct exporter *x, struct store *s, uint64_t *cursor, size_t max_scan,
		    struct buf *out, bool *ret_done)
{
	struct store_txn *t;
	struct store_cursor *c = NULL;
	int64_t written = 0;
	int r = store_begin(s, false, &t);
	if (r < 0)
		return r;
	if ((r = store_records_cursor(t, *cursor, &c)) < 0)
		goto out;
	*ret_done = false;
	for (size_t n = 0; n < max_scan; n++) {
		uint64_t seq;
		const uint8_t *data;
		size_t len;
		struct view v;
		r = store_cursor_next(c, &seq, &data, &len);
		if (r < 0)
			goto out;
		if (r == 0) {
			*ret_done = true;
			break;
		}
		*cursor = seq;
		x->scanned++;
		if ((r = view_parse(x, data, len, &v)) < 0)
			goto out;
		if (!wanted(x, &v))
			continue;
		if ((r = write_record(x, &v, out)) < 0)
			goto out;
		written++;
	}
	x->written += (uint64_t)written;
	r = 0;
out:
	store_cursor_close(c);
	store_abort(t);
	return r < 0 ? r : written;
}
