#include "export.h"
#include "export_int.h"
#include "recpack.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "common.h"
#include "render.h"
#include "store.h"
#include "uuid.h"

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
		size_t k = export__code_hash((const uint8_t *)ch->code, len) & (n - 1);
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


const char *export_format_name(enum export_format f)
{
	static const char *const names[] = {"csv", "ndjson", "xlsx", "sav", "dta"};
	return (size_t)f < sizeof(names) / sizeof(*names) ? names[f] : "unknown";
}

int export_new(const struct form_registry *forms, const struct export_opts *o,
	       struct exporter **ret, char *err, size_t errlen)
{
	if (o->format != EXPORT_CSV && o->format != EXPORT_NDJSON) {
		snprintf(err, errlen, "%s is written whole, not streamed: export_xlsx/export_stat",
			 export_format_name(o->format));
		return -EINVAL;
	}
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
			/* an instance's field: CSV puts it in its group's table
			 * (export_long.c), NDJSON under its group's name */
			uint32_t gi = 0;
			if (fd->group && o->format == EXPORT_CSV)
				continue;
			if (fd->group) {
				while (gi < x->n_groups && strcmp(x->groups[gi], fd->group->name))
					gi++;
				if (gi == EXPORT_MAX_GROUPS)
					continue;
				if (gi == x->n_groups)
					x->groups[x->n_groups++] = fd->group->name;
				gi++;
			}
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
						    .sensitive = fd->sensitive, .fd = fd,
						    .group = gi};
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
		free(x->rd[i].ic);
	}
	for (size_t i = 0; i < x->n_chunks; i++)
		buf_free(&x->chunks[i].out);
	free(x->chunks);
	export_dev_free(x->devs);
	free(x->rd);
	free(x->page);
	arena_free(x->page_arena);
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
int export_header(struct exporter *x, struct buf *out)
{
	if (x->o.format != EXPORT_CSV)
		return 0;
	/* A UTF-8 byte order mark first: without it Excel reads the file in
	 * the machine's code page and survivors' names turn to mojibake. */
	int r = buf_puts(out, "\xef\xbb\xbf"
			      "record_id,form_id,form_version,first_received,last_changed,devices,"
			      "deleted,conflict,device_names");
	for (size_t c = 0; c < x->n_cols && r >= 0; c++) {
		if (x->cols[c].sensitive && !x->o.include_sensitive)
			continue;
		if ((r = buf_putc(out, ',')) >= 0)
			r = export_csv_field(out, (const uint8_t *)x->cols[c].name,
					     strlen(x->cols[c].name));
		/* a point also as four numbers, after the "lat,lon" kept for
		 * readers of the CSV before them */
		for (int k = 0; k < 4 && r >= 0 && x->cols[c].fd->type == FT_GEOPOINT; k++)
			r = buf_printf(out, ",%s_%s", x->cols[c].name, export_geo_parts[k]);
	}
	return r < 0 ? r : buf_append(out, "\r\n", 2);
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
		ck->r = export__render_range(rd, x->page, i * CHUNK, to, &ck->out, &ck->written);
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
	/* device names, once, before the rendering threads start */
	int r = x->devs ? 0 : export_dev_load(s, &x->devs);
	if (r == 0 && !x->page_arena && !(x->page_arena = arena_new()))
		r = -ENOMEM;
	if (r < 0 || (r = store_begin(s, false, &t)) < 0)
		return r;
	arena_reset(x->page_arena);
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
		uint64_t log_seq = recpack_pointer(x->page[n].data, x->page[n].len), pusher;
		x->page[n].change = NULL;
		if (log_seq && (r = store_log_change(t, x->page_arena, log_seq,
						     &x->page[n].change,
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
