#include "export_stat.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <readstat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"
#include "export_table.h"
#include "store.h"

/* days from 1582-10-14 (SPSS) and from 1960-01-01 (Stata) to 1970-01-01 */
#define SPSS_EPOCH_DAYS 141428.0
#define STATA_EPOCH_DAYS 3653.0
#define DTA_STR_MAX 2045  /* longer: strL */
#define SAV_STR_MAX 32767
#define EMPTY_TEXT UINT32_MAX

/* ---- names ---- */

static bool reserved(enum export_format f, const char *s)
{
	static const char *const spss[] = {"ALL", "AND", "BY", "EQ", "GE", "GT", "LE",
					   "LT",  "NE",	 "NOT", "OR", "TO", "WITH"};
	static const char *const stata[] = {"_all",  "_b",   "byte",  "_coef", "_cons", "double",
					    "float", "if",   "in",    "int",   "long",  "_n",
					    "_N",    "_pi",  "_pred", "_rc",   "_skip", "strL",
					    "using", "with", "str",
					    /* ours: the yes/no value label (a choice
					     * variable's label is named as it is) */
					    "yesno"};
	if (f == EXPORT_SAV) {
		for (size_t i = 0; i < sizeof(spss) / sizeof(*spss); i++)
			if (!strcasecmp(s, spss[i]))
				return true;
		return false;
	}
	for (size_t i = 0; i < sizeof(stata) / sizeof(*stata); i++)
		if (!strcmp(s, stata[i]))
			return true;
	/* str1 ... str2045 name Stata's string types */
	return !strncmp(s, "str", 3) && s[3] && strspn(s + 3, "0123456789") == strlen(s + 3);
}

static bool taken(const char *s, char *const *used, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcasecmp(s, used[i]))
			return true;
	return false;
}

void export_stat_name(enum export_format f, const char *name, char *const *used, size_t n,
		      char out[65])
{
	size_t max = f == EXPORT_DTA ? 32 : 64, k = 0;
	if (!isalpha((unsigned char)name[0]))
		out[k++] = 'v';
	for (const char *p = name; *p && k < max; p++)
		out[k++] = isalnum((unsigned char)*p) || *p == '_' ? *p : '_';
	out[k] = 0;
	if (reserved(f, out) && k < max) {
		out[k++] = '_';
		out[k] = 0;
	}
	if (!taken(out, used, n))
		return;
	char base[65];
	memcpy(base, out, k + 1);
	for (unsigned i = 2;; i++) {
		char suf[16];
		int sn = snprintf(suf, sizeof(suf), "_%u", i);
		size_t keep = SH_MIN(strlen(base), max - (size_t)sn);
		snprintf(out, 65, "%.*s%s", (int)keep, base, suf);
		if (!taken(out, used, n))
			return;
	}
}

/* ---- the first pass: typed rows spooled, rows and widths counted ---- */

struct st_table {
	FILE *spool;
	uint64_t rows;
	size_t n_cols;
	uint32_t *width;              /* per column: the longest text, bytes */
	char **names;                 /* per column: the variable's name */
};

struct st {
	enum export_format f;
	struct export_table *t;
	struct st_table *tb;
	size_t n_t;
	char *err;
	size_t errlen;
};

/* The longest prefix of s[0..n) of at most max bytes that ends between
 * two UTF-8 characters. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	n = max;
	while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

static int spool_row(void *ud, size_t table, const struct export_tcell *cells)
{
	struct st *st = ud;
	struct st_table *tb = &st->tb[table];
	for (size_t i = 0; i < tb->n_cols; i++) {
		const struct export_tcol *c = export_table_col(st->t, table, i);
		const struct export_tcell *v = &cells[i];
		if (c->kind == EK_TEXT) {
			uint32_t len = v->empty || !v->str ? EMPTY_TEXT
							   : (uint32_t)utf8_cut(v->str, v->len, SAV_STR_MAX);
			if (fwrite(&len, sizeof(len), 1, tb->spool) != 1 ||
			    (len != EMPTY_TEXT && fwrite(v->str, 1, len, tb->spool) != len))
				return -EIO;
			if (len != EMPTY_TEXT && len > tb->width[i])
				tb->width[i] = len;
		} else {
			double d = v->empty ? NAN : v->num;
			if (fwrite(&d, sizeof(d), 1, tb->spool) != 1)
				return -EIO;
		}
	}
	tb->rows++;
	return 0;
}

/* ---- the second pass: each table's file from its spool ---- */

static ssize_t write_out(const void *data, size_t len, void *ctx)
{
	return fwrite(data, 1, len, ctx) == len ? (ssize_t)len : -1;
}

/* A label for the formats' limits: Stata's variable labels are 80 bytes,
 * SPSS's value labels 120. */
static const char *cut_label(const char *s, size_t max, char *buf)
{
	size_t n = utf8_cut(s, strlen(s), max);
	memcpy(buf, s, n);
	buf[n] = 0;
	return buf;
}

/* Stata: adds the strL of every cell of the STRING_REF columns, in row
 * order, before any row is written; *ret_refs gets them in that order
 * (NULL when there are none). ReadStat holds their text until the end. */
static int strl_refs(struct st *st, size_t ti, readstat_writer_t *w,
		     readstat_variable_t *const *vars, char *text, readstat_string_ref_t ***ret_refs)
{
	struct st_table *tb = &st->tb[ti];
	size_t n_strl = 0, k = 0;
	*ret_refs = NULL;
	for (size_t i = 0; i < tb->n_cols; i++)
		n_strl += readstat_variable_get_type(vars[i]) == READSTAT_TYPE_STRING_REF;
	if (!n_strl || !tb->rows)
		return 0;
	readstat_string_ref_t **refs = calloc(tb->rows * n_strl, sizeof(*refs));
	readstat_string_ref_t *empty = refs ? readstat_add_string_ref(w, "") : NULL;
	if (!empty) {
		free(refs);
		return -ENOMEM;
	}
	rewind(tb->spool);
	for (uint64_t row = 0; row < tb->rows; row++) {
		for (size_t i = 0; i < tb->n_cols; i++) {
			const struct export_tcol *c = export_table_col(st->t, ti, i);
			uint32_t len;
			double d;
			if (c->kind != EK_TEXT) {
				if (fread(&d, sizeof(d), 1, tb->spool) != 1)
					goto eio;
				continue;
			}
			if (fread(&len, sizeof(len), 1, tb->spool) != 1 ||
			    (len != EMPTY_TEXT && fread(text, 1, len, tb->spool) != len))
				goto eio;
			if (readstat_variable_get_type(vars[i]) != READSTAT_TYPE_STRING_REF)
				continue;
			text[len == EMPTY_TEXT ? 0 : len] = 0;
			refs[k] = len == EMPTY_TEXT || !len ? empty : readstat_add_string_ref(w, text);
			if (!refs[k++]) {
				free(refs);
				return -ENOMEM;
			}
		}
	}
	*ret_refs = refs;
	return 0;
eio:
	free(refs);
	return -EIO;
}

/* Table ti's file, written to out (flushed, not closed); name for
 * messages. */
static int table_file(struct st *st, size_t ti, FILE *out, const char *name)
{
	struct st_table *tb = &st->tb[ti];
	bool dta = st->f == EXPORT_DTA;
	readstat_writer_t *w = readstat_writer_init();
	readstat_variable_t **vars = calloc(tb->n_cols ? tb->n_cols : 1, sizeof(*vars));
	readstat_string_ref_t **refs = NULL;
	char *text = malloc(SAV_STR_MAX + 1), lab[4 * 80 + 1];
	readstat_error_t e = READSTAT_OK;
	int r = -ENOMEM;
	if (!w || !vars || !text)
		goto done;
	readstat_set_data_writer(w, write_out);
	readstat_label_set_t *yesno = readstat_add_label_set(w, READSTAT_TYPE_INT32, "yesno");
	readstat_label_int32_value(yesno, 0, "No");
	readstat_label_int32_value(yesno, 1, "Yes");
	for (size_t i = 0; i < tb->n_cols; i++) {
		const struct export_tcol *c = export_table_col(st->t, ti, i);
		readstat_type_t type = READSTAT_TYPE_DOUBLE;
		size_t width = 0;
		if (c->kind == EK_TEXT) {
			type = READSTAT_TYPE_STRING;
			width = SH_MAX(tb->width[i], 1);
			if (dta && width > DTA_STR_MAX)
				type = READSTAT_TYPE_STRING_REF;
		} else if (c->kind == EK_BOOL || c->kind == EK_CHOICE) {
			type = READSTAT_TYPE_INT32;
		}
		readstat_variable_t *v = vars[i] = readstat_add_variable(w, tb->names[i], type, width);
		readstat_variable_set_label(v, cut_label(c->label ? c->label : "", 80, lab));
		if (c->kind == EK_BOOL) {
			readstat_variable_set_label_set(v, yesno);
		} else if (c->kind == EK_CHOICE) {
			/* Stata names a value label as a variable: the same name */
			readstat_label_set_t *ls = readstat_add_label_set(w, READSTAT_TYPE_INT32,
									  tb->names[i]);
			for (size_t k = 0; k < c->fd->n_choices; k++) {
				const struct form_choice *ch = &c->fd->choices[k];
				int32_t n = export_table_choice_value(c, ch->code, strlen(ch->code));
				readstat_label_int32_value(ls, n, cut_label(ch->label, 120, lab));
			}
			readstat_variable_set_label_set(v, ls);
			readstat_variable_set_measure(v, READSTAT_MEASURE_NOMINAL);
		} else if (c->kind == EK_DATE) {
			readstat_variable_set_format(v, dta ? "%td" : "DATE11");
		} else if (c->kind == EK_DATETIME) {
			readstat_variable_set_format(v, dta ? "%tc" : "DATETIME24.3");
		} else if (c->kind == EK_INT) {
			readstat_variable_set_format(v, dta ? "%12.0g" : "F12.0");
		}
		if (c->kind == EK_TEXT)
			readstat_variable_set_measure(v, READSTAT_MEASURE_NOMINAL);
		else if (c->kind == EK_INT || c->kind == EK_NUM)
			readstat_variable_set_measure(v, READSTAT_MEASURE_SCALE);
	}
	char flabel[81];
	snprintf(flabel, sizeof(flabel), "Shahidi: %.60s", export_table_label(st->t, ti));
	readstat_writer_set_file_label(w, flabel);
	if (dta) {
		readstat_writer_set_file_format_version(w, 118); /* UTF-8, Stata 14+ */
		e = readstat_begin_writing_dta(w, out, (long)tb->rows);
	} else {
		readstat_writer_set_compression(w, READSTAT_COMPRESS_ROWS);
		e = readstat_begin_writing_sav(w, out, (long)tb->rows);
	}
	/* ReadStat writes the file's map (where its strLs and value labels
	 * start) before the first row: every strL must be known by then. */
	if (e == READSTAT_OK && (r = strl_refs(st, ti, w, vars, text, &refs)) < 0)
		goto done;
	size_t k_ref = 0;
	r = -ENOMEM;
	rewind(tb->spool);
	for (uint64_t row = 0; row < tb->rows && e == READSTAT_OK; row++) {
		e = readstat_begin_row(w);
		for (size_t i = 0; i < tb->n_cols && e == READSTAT_OK; i++) {
			const struct export_tcol *c = export_table_col(st->t, ti, i);
			if (c->kind == EK_TEXT) {
				uint32_t len;
				if (fread(&len, sizeof(len), 1, tb->spool) != 1 ||
				    (len != EMPTY_TEXT && fread(text, 1, len, tb->spool) != len)) {
					e = READSTAT_ERROR_READ;
					break;
				}
				text[len == EMPTY_TEXT ? 0 : len] = 0;
				if (readstat_variable_get_type(vars[i]) == READSTAT_TYPE_STRING_REF)
					e = readstat_insert_string_ref(w, vars[i], refs[k_ref++]);
				else
					e = readstat_insert_string_value(w, vars[i], text);
				continue;
			}
			double d;
			if (fread(&d, sizeof(d), 1, tb->spool) != 1) {
				e = READSTAT_ERROR_READ;
				break;
			}
			if (isnan(d))
				e = readstat_insert_missing_value(w, vars[i]);
			else if (c->kind == EK_BOOL || c->kind == EK_CHOICE)
				e = readstat_insert_int32_value(w, vars[i], (int32_t)d);
			else if (c->kind == EK_DATE)
				e = readstat_insert_double_value(
					w, vars[i],
					dta ? d + STATA_EPOCH_DAYS : (d + SPSS_EPOCH_DAYS) * 86400.0);
			else if (c->kind == EK_DATETIME)
				e = readstat_insert_double_value(
					w, vars[i],
					dta ? d + STATA_EPOCH_DAYS * 86400000.0
					    : d / 1000.0 + SPSS_EPOCH_DAYS * 86400.0);
			else
				e = readstat_insert_double_value(w, vars[i], d);
		}
		if (e == READSTAT_OK)
			e = readstat_end_row(w);
	}
	if (e == READSTAT_OK)
		e = readstat_end_writing(w);
	if (e != READSTAT_OK) {
		snprintf(st->err, st->errlen, "cannot write %s: %s", name, readstat_error_message(e));
		r = -EIO;
		goto done;
	}
	r = fflush(out) == 0 ? 0 : -errno;
	if (r < 0)
		snprintf(st->err, st->errlen, "cannot write %s: %s", name, strerror(-r));
done:
	readstat_writer_free(w);
	free(refs);
	free(vars);
	free(text);
	return r;
}

/* codebook.csv, appended to b: a row per variable of every file. */
static int codebook(struct st *st, struct buf *b)
{
	struct buf ch = {0};
	int r = buf_puts(b, "\xef\xbb\xbf"
			     "table,column,variable,field_number,type,label,choices,values,sensitive\r\n");
	for (size_t ti = 0; ti < st->n_t && r >= 0; ti++) {
		for (size_t i = 0; i < st->tb[ti].n_cols && r >= 0; i++) {
			const struct export_tcol *c = export_table_col(st->t, ti, i);
			const struct form_field *fd = c->fd;
			r = buf_printf(b, "%s,%s,%s,", export_table_name(st->t, ti), c->name,
				       st->tb[ti].names[i]);
			if (r >= 0 && fd)
				r = buf_printf(b, "%u", fd->number);
			if (r >= 0)
				r = buf_printf(b, ",%s,", fd ? form_type_name(fd->type)
							: c->kind == EK_INT    ? "integer"
							: c->kind == EK_BOOL   ? "boolean"
							: c->kind == EK_DATETIME ? "datetime"
										 : "id");
			if (r >= 0)
				r = export_csv_field(b, (const uint8_t *)(c->label ? c->label : ""),
						     strlen(c->label ? c->label : ""));
			for (int pass = 0; pass < 2 && r >= 0; pass++) {
				buf_reset(&ch);
				bool list = pass == 0 ? fd && c->kind != EK_NUM : c->kind == EK_CHOICE;
				for (size_t k = 0; list && k < fd->n_choices && r >= 0; k++) {
					const struct form_choice *x = &fd->choices[k];
					if (pass == 0)
						r = buf_printf(&ch, "%s%s=%s", k ? "; " : "", x->code, x->label);
					else
						r = buf_printf(&ch, "%s%d=%s", k ? "; " : "",
							       export_table_choice_value(c, x->code,
											 strlen(x->code)),
							       x->code);
				}
				if (r >= 0 && c->kind == EK_BOOL && pass == 1)
					r = buf_puts(&ch, "0=no; 1=yes");
				if (r >= 0)
					r = buf_putc(b, ',');
				if (r >= 0)
					r = export_csv_field(b, ch.data, ch.len);
			}
			if (r >= 0)
				r = buf_puts(b, fd && fd->sensitive ? ",yes\r\n" : ",no\r\n");
		}
	}
	buf_free(&ch);
	return r < 0 ? r : 0;
}

/* The first pass: the tables, their variables' names, every row typed
 * and spooled. The caller frees st with st_free whatever this returns. */
static int st_prepare(struct st *st, const struct form_registry *forms,
		      const struct export_opts *o, struct store *s, const char *tmpdir)
{
	int r = export_table_new(forms, o, s, &st->t, st->err, st->errlen);
	if (r < 0)
		return r;
	st->n_t = export_table_count(st->t);
	if (!(st->tb = calloc(st->n_t, sizeof(*st->tb))))
		return -ENOMEM;
	for (size_t ti = 0; ti < st->n_t; ti++) {
		struct st_table *tb = &st->tb[ti];
		tb->n_cols = export_table_ncols(st->t, ti);
		if (!(tb->width = calloc(tb->n_cols + 1, sizeof(*tb->width))) ||
		    !(tb->names = calloc(tb->n_cols + 1, sizeof(*tb->names))))
			return -ENOMEM;
		for (size_t i = 0; i < tb->n_cols; i++) {
			char name[65];
			export_stat_name(st->f, export_table_col(st->t, ti, i)->name, tb->names, i, name);
			if (!(tb->names[i] = strdup(name)))
				return -ENOMEM;
		}
		if (!(tb->spool = sh_tmpfile(tmpdir))) {
			r = -errno;
			snprintf(st->err, st->errlen, "cannot make a temporary file in %s: %s", tmpdir,
				 strerror(errno));
			return r;
		}
	}
	uint64_t cursor = 0;
	bool done = false;
	while (!done) {
		int64_t k = export_table_page(st->t, s, &cursor, 1000, spool_row, st, &done);
		if (k < 0)
			return (int)k;
		store_release_pages(s);
	}
	for (size_t ti = 0; ti < st->n_t; ti++)
		if (fflush(st->tb[ti].spool) != 0)
			return -EIO;
	return 0;
}

static void st_free(struct st *st)
{
	for (size_t ti = 0; st->tb && ti < st->n_t; ti++) {
		if (st->tb[ti].spool)
			fclose(st->tb[ti].spool);
		for (size_t i = 0; st->tb[ti].names && i < st->tb[ti].n_cols; i++)
			free(st->tb[ti].names[i]);
		free(st->tb[ti].names);
		free(st->tb[ti].width);
	}
	free(st->tb);
	export_table_free(st->t);
}

/* path, created or truncated, mode 0600 even over an existing file. */
static FILE *open_private(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 && fchmod(fd, 0600) == 0 ? fdopen(fd, "wb") : NULL;
	if (fd >= 0 && !f) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return f;
}

int export_stat_write(const struct form_registry *forms, const struct export_opts *o,
		      struct store *s, const char *dir, const char *tmpdir,
		      uint64_t *ret_records, char *err, size_t errlen)
{
	struct st st = {.f = o->format, .err = err, .errlen = errlen};
	struct buf cb = {0};
	char path[4096];
	FILE *f = NULL;
	err[0] = 0;
	int r = -EINVAL;
	if (o->format != EXPORT_SAV && o->format != EXPORT_DTA)
		goto out;
	if ((r = st_prepare(&st, forms, o, s, tmpdir)) < 0)
		goto out;
	for (size_t ti = 0; ti <= st.n_t; ti++) {
		if (ti < st.n_t)
			snprintf(path, sizeof(path), "%s/%s.%s", dir, export_table_name(st.t, ti),
				 export_format_name(st.f));
		else
			snprintf(path, sizeof(path), "%s/codebook.csv", dir);
		if (!(f = open_private(path))) {
			r = -errno;
			snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
			goto out;
		}
		if (ti < st.n_t) {
			r = table_file(&st, ti, f, path);
			fclose(st.tb[ti].spool); /* its disk space back at once */
			st.tb[ti].spool = NULL;
		} else if ((r = codebook(&st, &cb)) >= 0 && fwrite(cb.data, 1, cb.len, f) != cb.len) {
			r = -EIO;
		}
		if (fclose(f) != 0 && r >= 0)
			r = -errno;
		f = NULL;
		if (r < 0) {
			if (!err[0])
				snprintf(err, errlen, "cannot write %s: %s", path, sh_strerror(r));
			unlink(path);
			goto out;
		}
	}
	*ret_records = export_table_written(st.t);
	r = 0;
out:
	if (r < 0 && !err[0])
		snprintf(err, errlen, "the export failed: %s", sh_strerror(r));
	buf_free(&cb);
	st_free(&st);
	return r;
}

/* ---- one zip for a download ---- */

static void put16(FILE *f, uint32_t v)
{
	fputc((int)(v & 0xff), f);
	fputc((int)(v >> 8 & 0xff), f);
}

static void put32(FILE *f, uint32_t v)
{
	put16(f, v & 0xffff);
	put16(f, v >> 16);
}

struct zent {
	char name[80];
	uint32_t crc, csize, usize, offset;
};

/* Deflates in, from its start, into out as entry e (a data descriptor
 * after it: sizes known at the end). */
static int zip_add(FILE *out, FILE *in, struct zent *e, uint16_t dtime, uint16_t ddate)
{
	uint8_t *ib = malloc(1 << 16), *ob = malloc(1 << 16);
	z_stream z = {0};
	int r = -ENOMEM, zr = Z_OK;
	bool zinit = false;
	long off = ftell(out);
	if (!ib || !ob || off < 0 || off > (long)UINT32_MAX || fseek(in, 0, SEEK_SET) != 0) {
		r = off > (long)UINT32_MAX ? -EFBIG : r;
		goto out;
	}
	e->offset = (uint32_t)off;
	put32(out, 0x04034b50);
	put16(out, 20);
	put16(out, 0x0808); /* sizes after the data; UTF-8 name */
	put16(out, 8);
	put16(out, dtime);
	put16(out, ddate);
	put32(out, 0);
	put32(out, 0);
	put32(out, 0);
	put16(out, (uint32_t)strlen(e->name));
	put16(out, 0);
	fputs(e->name, out);
	if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		goto out;
	zinit = true;
	uint64_t usize = 0, csize = 0;
	uLong crc = crc32(0, NULL, 0);
	for (bool eof = false; !eof;) {
		size_t n = fread(ib, 1, 1 << 16, in);
		if (n < (1 << 16)) {
			if (ferror(in)) {
				r = -EIO;
				goto out;
			}
			eof = true;
		}
		crc = crc32(crc, ib, (uInt)n);
		usize += n;
		z.next_in = ib;
		z.avail_in = (uInt)n;
		do {
			z.next_out = ob;
			z.avail_out = 1 << 16;
			zr = deflate(&z, eof ? Z_FINISH : Z_NO_FLUSH);
			size_t k = (1 << 16) - z.avail_out;
			if (k && fwrite(ob, 1, k, out) != k) {
				r = -EIO;
				goto out;
			}
			csize += k;
		} while (z.avail_out == 0 || (eof && zr != Z_STREAM_END));
	}
	if (usize > UINT32_MAX || csize > UINT32_MAX) {
		r = -EFBIG; /* no zip64 */
		goto out;
	}
	e->crc = (uint32_t)crc;
	e->usize = (uint32_t)usize;
	e->csize = (uint32_t)csize;
	put32(out, 0x08074b50);
	put32(out, e->crc);
	put32(out, e->csize);
	put32(out, e->usize);
	r = ferror(out) ? -EIO : 0;
out:
	if (zinit)
		deflateEnd(&z);
	free(ib);
	free(ob);
	return r;
}

static int zip_end(FILE *out, const struct zent *e, size_t n, uint16_t dtime, uint16_t ddate)
{
	long cd = ftell(out);
	if (cd < 0 || cd > (long)UINT32_MAX)
		return -EFBIG;
	for (size_t i = 0; i < n; i++) {
		put32(out, 0x02014b50);
		put16(out, 3 << 8 | 20); /* made on Unix */
		put16(out, 20);
		put16(out, 0x0808);
		put16(out, 8);
		put16(out, dtime);
		put16(out, ddate);
		put32(out, e[i].crc);
		put32(out, e[i].csize);
		put32(out, e[i].usize);
		put16(out, (uint32_t)strlen(e[i].name));
		put16(out, 0);
		put16(out, 0);
		put16(out, 0);
		put16(out, 0);
		put32(out, 0100600u << 16); /* a regular file, 0600 */
		put32(out, e[i].offset);
		fputs(e[i].name, out);
	}
	long end = ftell(out);
	put32(out, 0x06054b50);
	put16(out, 0);
	put16(out, 0);
	put16(out, (uint32_t)n);
	put16(out, (uint32_t)n);
	put32(out, (uint32_t)(end - cd));
	put32(out, (uint32_t)cd);
	put16(out, 0);
	return fflush(out) == 0 && !ferror(out) ? 0 : -EIO;
}

int export_stat_zip(const struct form_registry *forms, const struct export_opts *o,
		    struct store *s, const char *tmpdir, int *ret_fd, uint64_t *ret_records,
		    char *err, size_t errlen)
{
	struct st st = {.f = o->format, .err = err, .errlen = errlen};
	struct zent *ents = NULL;
	struct buf cb = {0};
	FILE *out = NULL, *f = NULL;
	err[0] = 0;
	int r = -EINVAL;
	if (o->format != EXPORT_SAV && o->format != EXPORT_DTA)
		goto fail;
	if ((r = st_prepare(&st, forms, o, s, tmpdir)) < 0)
		goto fail;
	r = -ENOMEM;
	if (!(ents = calloc(st.n_t + 1, sizeof(*ents))))
		goto fail;
	/* every file unlinked from the start: nothing is left behind, even
	 * by a crash */
	if (!(out = sh_tmpfile(tmpdir))) {
		r = -errno;
		goto fail;
	}
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	uint16_t dtime = (uint16_t)(tm.tm_hour << 11 | tm.tm_min << 5 | tm.tm_sec / 2);
	uint16_t ddate = (uint16_t)((tm.tm_year - 80) << 9 | (tm.tm_mon + 1) << 5 | tm.tm_mday);
	for (size_t ti = 0; ti <= st.n_t; ti++) {
		struct zent *e = &ents[ti];
		if (ti < st.n_t)
			snprintf(e->name, sizeof(e->name), "%s.%s", export_table_name(st.t, ti),
				 export_format_name(st.f));
		else
			snprintf(e->name, sizeof(e->name), "codebook.csv");
		if (!(f = sh_tmpfile(tmpdir))) {
			r = -errno;
			goto fail;
		}
		if (ti < st.n_t) {
			r = table_file(&st, ti, f, e->name);
			fclose(st.tb[ti].spool);
			st.tb[ti].spool = NULL;
		} else if ((r = codebook(&st, &cb)) >= 0 &&
			   (fwrite(cb.data, 1, cb.len, f) != cb.len || fflush(f) != 0)) {
			r = -EIO;
		}
		if (r >= 0)
			r = zip_add(out, f, e, dtime, ddate);
		fclose(f);
		f = NULL;
		if (r < 0)
			goto fail;
	}
	if ((r = zip_end(out, ents, st.n_t + 1, dtime, ddate)) < 0)
		goto fail;
	int fd = dup(fileno(out));
	if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	*ret_fd = fd;
	*ret_records = export_table_written(st.t);
	r = 0;
fail:
	if (r < 0 && !err[0])
		snprintf(err, errlen, "the export failed: %s", sh_strerror(r));
	if (out)
		fclose(out);
	buf_free(&cb);
	free(ents);
	st_free(&st);
	return r;
}
