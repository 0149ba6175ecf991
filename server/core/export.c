#include "export.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "common.h"
#include "render.h"
#include "store.h"
#include "uuid.h"

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
};

struct slot {
	uint32_t number;
	uint32_t col;
};

/* One stored record of the page being exported: borrowed from the map,
 * valid while the page's read transaction is open. */
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
	struct renderer *rd;          /* o.threads of them */
	struct stored *page;          /* the records of the current page */
	size_t page_cap;
	struct chunk *chunks;         /* page_cap / CHUNK of them, rounded up */
	size_t n_chunks;
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

static uint32_t code_hash(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static int labels_new(struct column *c)
{
	const struct form_field *fd = c->fd;
	if (!fd->n_choices)
		return 0;
	size_t n = 4;
	while (n < fd->n_choices * 2)
		n *= 2;
	if (!(c->labels = calloc(n, sizeof(*c->labels))))
		return -ENOMEM;
	c->n_labels = n;
	struct buf b = {0};
	for (size_t i = 0; i < fd->n_choices; i++) {
		const struct form_choice *ch = &fd->choices[i];
		size_t len = strlen(ch->code);
		size_t k = code_hash((const uint8_t *)ch->code, len) & (n - 1);
		while (c->labels[k].code)
			k = (k + 1) & (n - 1);
		buf_reset(&b);
		if (export_csv_field(&b, (const uint8_t *)ch->label, strlen(ch->label)) < 0 ||
		    !(c->labels[k].csv = malloc(b.len + 1))) {
			buf_free(&b);
			return -ENOMEM;
		}
		memcpy(c->labels[k].csv, b.data, b.len);
		c->labels[k].csv_len = b.len;
		c->labels[k].code = ch->code;
		c->labels[k].code_len = len;
		c->labels[k].text = ch->label;
	}
	buf_free(&b);
	return 0;
}

static const struct label *label_find(const struct column *c, const uint8_t *code, size_t len)
{
	if (!c->n_labels)
		return NULL;
	size_t k = code_hash(code, len) & (c->n_labels - 1);
	for (; c->labels[k].code; k = (k + 1) & (c->n_labels - 1))
		if (c->labels[k].code_len == len && !memcmp(c->labels[k].code, code, len))
			return &c->labels[k];
	return NULL;
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
			if (fd->group)
				continue; /* an instance's: its group's table (export_long.c) */
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
	if (!x->o.threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		x->o.threads = n < 1 ? 1 : n > EXPORT_MAX_THREADS ? EXPORT_MAX_THREADS : (unsigned)n;
	}
	if (x->o.threads > EXPORT_MAX_THREADS)
		x->o.threads = EXPORT_MAX_THREADS;
	x->slots = calloc(x->n_cols, sizeof(*x->slots));
	x->rd = calloc(x->o.threads, sizeof(*x->rd));
	if (!x->slots || !x->rd)
		goto fail;
	for (unsigned i = 0; i < x->o.threads; i++) {
		struct renderer *rd = &x->rd[i];
		rd->x = x;
		rd->cell = calloc(x->n_cols, sizeof(*rd->cell));
		rd->cell_len = calloc(x->n_cols, sizeof(*rd->cell_len));
		if (!rd->cell || !rd->cell_len)
			goto fail;
	}
	for (size_t i = 0; i < x->n_cols; i++) {
		struct column *c = &x->cols[i];
		if (c->sensitive && !o->include_sensitive)
			continue;
		x->slots[x->n_slots++] = (struct slot){c->number, (uint32_t)i};
	}
	qsort(x->slots, x->n_slots, sizeof(*x->slots), cmp_slot);
	x->n_col_of = x->n_slots ? x->slots[x->n_slots - 1].number + 1 : 0;
	if (x->n_col_of > 4096)
		x->n_col_of = 4096; /* numbers above: found by binary search */
	if (!(x->col_of = calloc(x->n_col_of + 1, sizeof(*x->col_of))))
		goto fail;
	for (size_t i = 0; i < x->n_slots; i++)
		if (x->slots[i].number < x->n_col_of)
			x->col_of[x->slots[i].number] = x->slots[i].col + 1;
	for (size_t i = 0; i < x->n_cols; i++) {
		struct column *c = &x->cols[i];
		struct buf b = {0};
		if ((r = labels_new(c)) < 0)
			goto fail;
		if (export_json_string(&b, (const uint8_t *)c->name, strlen(c->name)) < 0 ||
		    buf_append(&b, ":", 2) < 0) {
			buf_free(&b);
			r = -ENOMEM;
			goto fail;
		}
		c->json_key = (char *)b.data; /* NUL-terminated: the ":" copied it */
		c->json_key_len = b.len - 1;
	}
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
	for (unsigned i = 0; x->rd && i < x->o.threads; i++) {
		free(x->rd[i].cell);
		free(x->rd[i].cell_len);
		buf_free(&x->rd[i].tmp);
	}
	for (size_t i = 0; i < x->n_chunks; i++)
		buf_free(&x->chunks[i].out);
	free(x->chunks);
	free(x->rd);
	free(x->page);
	for (size_t i = 0; i < x->n_cols; i++) {
		for (size_t k = 0; k < x->cols[i].n_labels; k++)
			free(x->cols[i].labels[k].csv);
		free(x->cols[i].labels);
		free(x->cols[i].json_key);
	}
	free(x->col_of);
	free(x->cols);
	free(x->slots);
	free(x->form_id);
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

/* The current value of one register (shahidi.store.v1.Register bytes):
 * the live entry with the greatest (hlc, device), as merge_current(). */
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
			if (*ret_field && *ret_field != x->county_field && !col_of(x, *ret_field)) {
				*ret_found = false;
				return 0;
			}
			continue;
		}
		if (f.number == 4 && f.wire_type == 2 && f.len) {
			/* an instance's register (its removal, field 0, included):
			 * not the record's own */
			*ret_found = false;
			return 0;
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

/* A field's value, for its column and the county filter. */
static void view_cell(struct renderer *rd, struct view *v, uint32_t field, const uint8_t *val,
		      size_t vlen)
{
	const struct exporter *x = rd->x;
	struct form_value fv;
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
}

/* A pointer record's fields: the writes of the one change that made it
 * (shahidi.v1.Change field 8, FieldWrite{field 1, value 2}). */
static int view_change(struct renderer *rd, const uint8_t *p, size_t n, struct view *v)
{
	struct pb_field f, g;
	size_t pos = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number != 8 || f.wire_type != 2)
			continue;
		uint32_t field = 0;
		const uint8_t *val = NULL;
		size_t vlen = 0, p2 = 0;
		bool inst = false;
		while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
			if (g.number == 1)
				field = (uint32_t)g.varint;
			else if (g.number == 2) {
				val = g.data;
				vlen = g.len;
			} else if (g.number == 5 && g.len)
				inst = true; /* FieldWrite.instance: not the record's */
		}
		if (r < 0)
			return r;
		if (field && !inst)
			view_cell(rd, v, field, val, vlen);
	}
	return r;
}

static int view_parse(struct renderer *rd, const uint8_t *p, size_t n, struct view *v)
{
	const struct exporter *x = rd->x;
	struct pb_field f;
	size_t pos = 0;
	int r;
	memset(v, 0, sizeof(*v));
	memset(rd->cell, 0, x->n_cols * sizeof(*rd->cell));
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
			view_cell(rd, v, field, val, vlen);
			break;
		}
		default:
			break;
		}
	}
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
			r = buf_puts(out, v->conflicts ? ",yes" : ",no");
		for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
			const struct column *col = &x->cols[c];
			if (col->sensitive && !x->o.include_sensitive)
				continue;
			if ((r = buf_putc(out, ',')) < 0)
				break;
			if (rd->cell[c])
				r = csv_cell(rd, col, rd->cell[c], rd->cell_len[c], out);
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
		r = buf_puts(out, v->deleted ? "],\"deleted\":true" : "],\"deleted\":false");
	if (r >= 0)
		r = buf_puts(out, v->conflicts ? ",\"conflict\":true,\"fields\":{"
					       : ",\"conflict\":false,\"fields\":{");
	size_t k = 0;
	for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
		if (!rd->cell[c])
			continue;
		const struct column *col = &x->cols[c];
		if (k++ && (r = buf_putc(out, ',')) < 0)
			break;
		if ((r = buf_append(out, col->json_key, col->json_key_len)) < 0)
			break;
		r = json_cell(rd, col, rd->cell[c], rd->cell_len[c], out);
	}
	return r < 0 ? r : buf_append(out, "}}\n", 3);
}

int export_header(struct exporter *x, struct buf *out)
{
	if (x->o.format != EXPORT_CSV)
		return 0;
	/* A UTF-8 byte order mark first: without it Excel reads the file in
	 * the machine's code page and survivors' names turn to mojibake. */
	int r = buf_puts(out, "\xef\xbb\xbf"
			      "record_id,form_id,form_version,first_received,last_changed,devices,"
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

/* Record.log_seq of a pointer record, else 0. A full record's registers
 * (field 6) come before it: the scan stops there. */
static uint64_t pointer_of(const uint8_t *p, size_t n)
{
	struct pb_field f;
	size_t pos = 0;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		if (f.number == 6)
			return 0;
		if (f.number == 15 && f.wire_type == 0)
			return f.varint;
	}
	return 0;
}

/* Renders records [from, to) of the page into out. */
static int render_range(struct renderer *rd, const struct stored *recs, size_t from, size_t to,
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
		if (sr->change && (r = view_change(rd, sr->change, sr->change_len, &v)) < 0)
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

/* Chunks of a page are handed to the rendering threads as soon as they are
 * read, so that rendering overlaps the scan (which only one thread may do:
 * it uses the read transaction). */
#define CHUNK 256

struct page_work {
	struct exporter *x;
	pthread_mutex_t lock;
	pthread_cond_t ready;
	size_t published;             /* records read so far */
	bool scan_done;
	size_t next_chunk;            /* the next chunk to claim */
};

static void take_chunks(struct page_work *pw, struct renderer *rd)
{
	struct exporter *x = pw->x;
	pthread_mutex_lock(&pw->lock);
	for (;;) {
		size_t i;
		while (((i = pw->next_chunk) + 1) * CHUNK > pw->published && !pw->scan_done)
			pthread_cond_wait(&pw->ready, &pw->lock);
		if (i * CHUNK >= pw->published)
			break; /* scan done, nothing left */
		pw->next_chunk++;
		size_t to = SH_MIN((i + 1) * CHUNK, pw->published);
		pthread_mutex_unlock(&pw->lock);
		struct chunk *ck = &x->chunks[i];
		buf_reset(&ck->out);
		ck->r = render_range(rd, x->page, i * CHUNK, to, &ck->out, &ck->written);
		pthread_mutex_lock(&pw->lock);
	}
	pthread_mutex_unlock(&pw->lock);
}

struct worker_arg {
	struct page_work *pw;
	struct renderer *rd;
};

static void *render_worker(void *arg)
{
	struct worker_arg *wa = arg;
	take_chunks(wa->pw, wa->rd);
	return NULL;
}

static void publish(struct page_work *pw, size_t n, bool done)
{
	pthread_mutex_lock(&pw->lock);
	pw->published = n;
	pw->scan_done = done;
	pthread_cond_broadcast(&pw->ready);
	pthread_mutex_unlock(&pw->lock);
}

int64_t export_page(struct exporter *x, struct store *s, uint64_t *cursor, size_t max_scan,
		    struct buf *out, bool *ret_done)
{
	struct store_txn *t;
	struct store_cursor *c = NULL;
	int64_t written = 0;
	size_t n = 0;
	struct page_work pw = {.x = x};
	pthread_t tid[EXPORT_MAX_THREADS];
	struct worker_arg wa[EXPORT_MAX_THREADS];
	unsigned started = 0;
	int r = store_begin(s, false, &t);
	if (r < 0)
		return r;
	size_t n_chunks = (max_scan + CHUNK - 1) / CHUNK;
	if (max_scan > x->page_cap) {
		struct stored *np = realloc(x->page, max_scan * sizeof(*np));
		struct chunk *nc = np ? realloc(x->chunks, n_chunks * sizeof(*nc)) : NULL;
		if (np)
			x->page = np;
		if (!nc) {
			r = -ENOMEM;
			goto out;
		}
		memset(nc + x->n_chunks, 0, (n_chunks - x->n_chunks) * sizeof(*nc));
		x->chunks = nc;
		x->n_chunks = n_chunks;
		x->page_cap = max_scan;
	}
	if ((r = store_records_cursor(t, *cursor, &c)) < 0)
		goto out;
	pthread_mutex_init(&pw.lock, NULL);
	pthread_cond_init(&pw.ready, NULL);
	for (unsigned i = 1; i < x->o.threads && max_scan > CHUNK; i++, started++) {
		wa[i] = (struct worker_arg){&pw, &x->rd[i]};
		if (pthread_create(&tid[i], NULL, render_worker, &wa[i]) != 0)
			break;
	}
	*ret_done = false;
	while (n < max_scan) {
		uint64_t seq;
		r = store_cursor_next(c, &seq, &x->page[n].data, &x->page[n].len);
		if (r < 0)
			break;
		if (r == 0) {
			*ret_done = true;
			break;
		}
		*cursor = seq;
		/* A pointer record's fields are its change's: found here, since
		 * only this thread may use the transaction. */
		uint64_t log_seq = pointer_of(x->page[n].data, x->page[n].len), pusher;
		x->page[n].change = NULL;
		if (log_seq && (r = store_log_change(t, log_seq, &x->page[n].change,
						     &x->page[n].change_len, &pusher)) < 0) {
			r = r == -ENOENT ? -EIO : r;
			break;
		}
		if (++n % CHUNK == 0 && started)
			publish(&pw, n, false);
	}
	/* On a read error the page is still rendered to its end (the workers
	 * wait for it), then dropped. */
	publish(&pw, n, true);
	take_chunks(&pw, &x->rd[0]);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(tid[i], NULL);
	pthread_cond_destroy(&pw.ready);
	pthread_mutex_destroy(&pw.lock);
	if (r < 0)
		goto out;
	x->scanned += n;
	for (size_t i = 0; i * CHUNK < n; i++) {
		struct chunk *ck = &x->chunks[i];
		if ((r = ck->r) < 0 || (r = buf_append(out, ck->out.data, ck->out.len)) < 0)
			goto out;
		written += ck->written;
	}
	x->written += (uint64_t)written;
	r = 0;
out:
	store_cursor_close(c);
	store_abort(t);
	return r < 0 ? r : written;
}
