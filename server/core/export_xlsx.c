#include "export_xlsx.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xlsxwriter.h>

#include "common.h"
#include "export_table.h"
#include "store.h"

/* Excel's serial day of 1970-01-01 (the 1900 date system). */
#define EXCEL_EPOCH 25569.0
/* Excel's limit of characters in a cell: bytes are never fewer. */
#define CELL_MAX 32767

struct xw {
	struct export_table *t;
	lxw_workbook *wb;
	lxw_worksheet **ws;           /* per table */
	lxw_row_t *rows;              /* per table: the next row */
	lxw_format *head, *date, *datetime;
	char *err;
	size_t errlen;
	char *tmp;                    /* CELL_MAX + 1 bytes, made when a text
					 over the limit needs it */
};

/* s as a string cell, cut at a character boundary at Excel's limit. */
static lxw_error put_text(struct xw *w, lxw_worksheet *ws, lxw_row_t row, lxw_col_t col,
			  const char *s, size_t n)
{
	if (n <= CELL_MAX)
		return worksheet_write_string(ws, row, col, s, NULL);
	if (!w->tmp && !(w->tmp = malloc(CELL_MAX + 1)))
		return LXW_ERROR_MEMORY_MALLOC_FAILED;
	char *tmp = w->tmp;
	n = CELL_MAX;
	while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	return worksheet_write_string(ws, row, col, tmp, NULL);
}

static int on_row(void *ud, size_t table, const struct export_tcell *cells)
{
	struct xw *w = ud;
	lxw_worksheet *ws = w->ws[table];
	lxw_row_t row = w->rows[table];
	if (row >= LXW_ROW_MAX) {
		snprintf(w->err, w->errlen,
			 "the %s table has more rows than an Excel sheet holds (1,048,575): "
			 "export it as csv",
			 export_table_name(w->t, table));
		return -EFBIG;
	}
	lxw_error e = LXW_NO_ERROR;
	for (size_t i = 0; i < export_table_ncols(w->t, table) && !e; i++) {
		const struct export_tcol *c = export_table_col(w->t, table, i);
		const struct export_tcell *v = &cells[i];
		lxw_col_t col = (lxw_col_t)i;
		if (v->empty)
			continue;
		switch (c->kind) {
		case EK_TEXT:
		case EK_CHOICE:
			if (v->str && v->len)
				e = put_text(w, ws, row, col, v->str, v->len);
			break;
		case EK_INT:
		case EK_NUM:
			if (isfinite(v->num))
				e = worksheet_write_number(ws, row, col, v->num, NULL);
			break;
		case EK_BOOL:
			e = worksheet_write_boolean(ws, row, col, v->num != 0, NULL);
			break;
		case EK_DATE:
			e = worksheet_write_number(ws, row, col, v->num + EXCEL_EPOCH, w->date);
			break;
		case EK_DATETIME:
			e = worksheet_write_number(ws, row, col, v->num / 86400000.0 + EXCEL_EPOCH,
						   w->datetime);
			break;
		}
	}
	if (e) {
		snprintf(w->err, w->errlen, "cannot write the workbook: %s", lxw_strerror(e));
		return -EIO;
	}
	w->rows[table] = row + 1;
	return 0;
}

static const char *kind_name(const struct export_tcol *c)
{
	if (c->fd)
		return form_type_name(c->fd->type);
	switch (c->kind) {
	case EK_INT: return "integer";
	case EK_BOOL: return "boolean";
	case EK_DATETIME: return "datetime";
	default: return "id";
	}
}

/* The codebook sheet: a row per column of every table. */
static lxw_error codebook(struct xw *w, lxw_worksheet *ws)
{
	static const char *const head[] = {"table",  "column",  "field_number", "type",
					   "label",  "choices", "sensitive"};
	struct buf ch = {0};
	lxw_error e = LXW_NO_ERROR;
	lxw_row_t row = 0;
	for (lxw_col_t i = 0; i < 7 && !e; i++)
		e = worksheet_write_string(ws, 0, i, head[i], w->head);
	for (size_t ti = 0; ti < export_table_count(w->t) && !e; ti++) {
		for (size_t i = 0; i < export_table_ncols(w->t, ti) && !e; i++) {
			const struct export_tcol *c = export_table_col(w->t, ti, i);
			const struct form_field *fd = c->fd;
			row++;
			buf_reset(&ch);
			/* a choice's or several choices' list; not a geopoint's parts */
			for (size_t k = 0; fd && c->kind != EK_NUM && k < fd->n_choices; k++)
				if (buf_printf(&ch, "%s%s=%s", k ? "; " : "", fd->choices[k].code,
					       fd->choices[k].label) < 0) {
					e = LXW_ERROR_MEMORY_MALLOC_FAILED;
					break;
				}
			if (buf_putc(&ch, 0) < 0)
				e = LXW_ERROR_MEMORY_MALLOC_FAILED;
			if (!e)
				e = worksheet_write_string(ws, row, 0, export_table_name(w->t, ti), NULL);
			if (!e)
				e = worksheet_write_string(ws, row, 1, c->name, NULL);
			if (!e && fd)
				e = worksheet_write_number(ws, row, 2, fd->number, NULL);
			if (!e)
				e = worksheet_write_string(ws, row, 3, kind_name(c), NULL);
			if (!e)
				e = worksheet_write_string(ws, row, 4, c->label ? c->label : "", NULL);
			if (!e && ch.len > 1)
				e = worksheet_write_string(ws, row, 5, (const char *)ch.data, NULL);
			if (!e)
				e = worksheet_write_string(ws, row, 6, fd && fd->sensitive ? "yes" : "no",
							   NULL);
		}
	}
	buf_free(&ch);
	return e;
}

/* Creates path empty with mode 0600 (whatever the umask, even over an
 * existing file): libxlsxwriter's fopen keeps the mode it finds. */
static int create_private(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int r = fchmod(fd, 0600) < 0 || ftruncate(fd, 0) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int export_xlsx_write(const struct form_registry *forms, const struct export_opts *o,
		      struct store *s, const char *path, const char *tmpdir,
		      uint64_t *ret_records, char *err, size_t errlen)
{
	struct xw w = {.err = err, .errlen = errlen};
	char tmpd[4096];
	snprintf(tmpd, sizeof(tmpd), "%s", tmpdir);
	lxw_workbook_options wo = {.constant_memory = LXW_TRUE, .tmpdir = tmpd};
	bool created = false;
	err[0] = 0;
	int r = export_table_new(forms, o, s, &w.t, err, errlen);
	if (r < 0)
		goto out;
	size_t n = export_table_count(w.t);
	r = -ENOMEM;
	w.ws = calloc(n, sizeof(*w.ws));
	w.rows = calloc(n, sizeof(*w.rows));
	if (!w.ws || !w.rows)
		goto out;
	if ((r = create_private(path)) < 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
		goto out;
	}
	created = true;
	r = -ENOMEM;
	if (!(w.wb = workbook_new_opt(path, &wo)))
		goto out;
	w.head = workbook_add_format(w.wb);
	w.date = workbook_add_format(w.wb);
	w.datetime = workbook_add_format(w.wb);
	format_set_bold(w.head);
	format_set_num_format(w.date, "yyyy-mm-dd");
	format_set_num_format(w.datetime, "yyyy-mm-dd hh:mm:ss");
	for (size_t i = 0; i < n; i++) {
		char name[LXW_SHEETNAME_MAX + 1];
		snprintf(name, sizeof(name), "%s", export_table_name(w.t, i));
		if (!(w.ws[i] = workbook_add_worksheet(w.wb, name)))
			goto out;
		for (size_t c = 0; c < export_table_ncols(w.t, i); c++)
			if (worksheet_write_string(w.ws[i], 0, (lxw_col_t)c,
						   export_table_col(w.t, i, c)->name, w.head))
				goto out;
		worksheet_freeze_panes(w.ws[i], 1, 0);
		w.rows[i] = 1;
	}
	lxw_worksheet *cb = workbook_add_worksheet(w.wb, "codebook");
	if (!cb)
		goto out;
	uint64_t cursor = 0;
	bool done = false;
	while (!done) {
		int64_t k = export_table_page(w.t, s, &cursor, 1000, on_row, &w, &done);
		if (k < 0) {
			r = (int)k;
			goto out;
		}
		store_release_pages(s); /* constant memory, whatever the store's size */
	}
	lxw_error e = codebook(&w, cb);
	if (e) {
		snprintf(err, errlen, "cannot write the workbook: %s", lxw_strerror(e));
		r = -EIO;
		goto out;
	}
	e = workbook_close(w.wb);
	w.wb = NULL;
	if (e) {
		snprintf(err, errlen, "cannot write %s: %s", path, lxw_strerror(e));
		r = -EIO;
		goto out;
	}
	*ret_records = export_table_written(w.t);
	r = 0;
out:
	if (w.wb) {
		/* libxlsxwriter has no way to drop a workbook but closing it */
		workbook_close(w.wb);
	}
	if (r < 0) {
		if (!err[0])
			snprintf(err, errlen, "cannot write %s: %s", path, sh_strerror(r));
		if (created)
			unlink(path);
	}
	free(w.tmp);
	free(w.ws);
	free(w.rows);
	export_table_free(w.t);
	return r;
}
