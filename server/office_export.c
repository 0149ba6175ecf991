/* office_export: GET /v1/export, every format: streamed a page at a time
 * (CSV, NDJSON, the CSV zip, the files' zip), or made whole in an unlinked
 * file and then streamed (XLSX, SPSS, Stata); audited before its first
 * byte and at its end, complete or cut. */
#include "office.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <llhttp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "audit.h"
#include "auth.h"
#include "common.h"
#include "daily.h"
#include "export.h"
#include "export_stat.h"
#include "export_xlsx.h"
#include "export_zip.h"
#include "http.h"
#include "office_int.h"
#include "render.h"
#include "resolve.h"
#include "routes.h"
#include "server.h"
#include "office_api.h"
#include "qr.h"
#include "status.h"
#include "task.h"
#include "upload.h"
#include "uuid.h"

/* ---- export: streamed, a page at a time, audited first ---- */

/* true when code is in the county vocabulary of form_id (any version);
 * otherwise *ret_valid (a new reference) maps the valid codes to names. */
static bool export__county_known(const struct form_registry *forms, const char *form_id,
				 const char *code, json_t **ret_valid)
{
	const struct form_field *vocab = NULL;
	for (size_t i = 0; i < form_registry_count(forms); i++) {
		const struct form *f = form_registry_at(forms, i);
		if (!f->county_field || strcmp(f->form_id, form_id))
			continue;
		if (form_choice(f->county_field, code, strlen(code)))
			return true;
		vocab = vocab ? vocab : f->county_field;
	}
	if (!vocab)
		return true; /* a form without counties: nothing matches, as before */
	json_t *valid = json_object();
	for (size_t i = 0; i < vocab->n_choices; i++)
		json_object_set_new(valid, vocab->choices[i].code, json_string(vocab->choices[i].label));
	*ret_valid = valid;
	return false;
}

#define EXPORT_PAGE 5000

static const char *export__type(enum export_format f, bool zip)
{
	if (f == EXPORT_XLSX)
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
	if (zip || f == EXPORT_SAV || f == EXPORT_DTA)
		return "application/zip";
	return f == EXPORT_CSV ? "text/csv; charset=utf-8" : "application/x-ndjson";
}

static bool export__form_known(const struct form_registry *forms, const char *form_id)
{
	for (size_t i = 0; i < form_registry_count(forms); i++)
		if (!strcmp(form_registry_at(forms, i)->form_id, form_id))
			return true;
	return false;
}

/* An export's audit trail is two entries, committed by the writer: one
 * before the first byte leaves (who, what filters, sensitive or not) and
 * one after the last (records sent, complete or cut), tied by an id. An
 * export whose first entry cannot be written does not start. */
struct export_job {
	struct task task;          /* task.job: the start entry, then the end entry */
	struct exporter *x;
	struct export_zip *zx;     /* format=csvzip, instead of x */
	struct upload_zip *fz;     /* format=files: the attachments, instead of x */
	/* format=xlsx, sav or dta (whole): the file is made on the first step
	 * (in the data directory, unlinked) and then sent a piece at a time */
	struct export_opts wo;
	int fd;
	uint64_t records;          /* whole: the records in the file */
	char errmsg[200];
	char wform[65];
	bool slot;                 /* holds export__whole_running */
	uint64_t cursor;
	bool done, started, ended;
	bool csv;
	int err;
	uint64_t queued, sent;     /* records handed to the connection / written */
	struct buf out;
	/* when the client accepts gzip or deflate: the stream compressing out,
	 * and the buffer it compresses into (swapped with out after each page) */
	struct codec_deflater *z;
	enum codec_enc zenc;
	struct buf zout;
	char filename[128]; /* Content-Disposition */
	struct office_actor actor;
	char id[17];
	json_t *details;           /* the entry the audit job writes */
	char counties[SCOPE_COUNTIES][4];
	const char *cptr[SCOPE_COUNTIES];
};

static void export_next(struct export_job *e);

static int export_audit_fn(struct store_txn *t, void *ud)
{
	struct export_job *e = ud;
	/* The writer may run this again after growing the map. */
	return office_api_export_audit(t, &e->actor, e->ended, e->details);
}

/* Whole-file exports running: each holds a thread of the pool (which
 * pulls and the office's reads share) for the whole of its file, up to a
 * minute for 100k records, so one at a time. Loop thread only. */
static unsigned export__whole_running;
#define EXPORT_WHOLE_MAX 1

static void export_free_job(struct export_job *e)
{
	if (e->slot)
		export__whole_running--;
	json_decref(e->details);
	export_free(e->x);
	export_zip_free(e->zx);
	upload_zip_free(e->fz);
	codec_deflater_free(e->z);
	if (e->fd >= 0)
		close(e->fd);
	buf_free(&e->zout);
	buf_free(&e->out);
	task_release(&e->task);
	free(e);
}

static void export_ended(struct task *t)
{
	struct export_job *e = (struct export_job *)t;
	if (t->job.result < 0)
		fprintf(stderr, "shahidi-server: export %s: its end could not be audited: %s\n", e->id,
			sh_strerror(t->job.result));
	export_free_job(e);
}

/* What the end entry counts: records, or files for format=files. */
static uint64_t export__count(const struct export_job *e)
{
	return e->wo.format >= EXPORT_XLSX ? e->records
	       : e->zx			   ? export_zip_written(e->zx)
	       : e->fz			   ? upload_zip_files(e->fz)
					   : export_written(e->x);
}

static void export_finish(struct export_job *e)
{
	const char *outcome = e->err == -EPIPE || http_conn_gone(e->task.c) ? "cut" : "failed";
	/* Its file is made and sent (or given up): the next whole-file export
	 * may start now, not only once the end entry below is committed
	 * (which a client that has read the last byte would see as 503). */
	if (e->slot) {
		export__whole_running--;
		e->slot = false;
	}
	if (!e->started) {
		/* the reason is logged; only Excel's row limit is the client's to know */
		http_error(e->task.c, e->err == -EFBIG ? 413 : 500,
			   e->err == -EFBIG ? "too_large" : "internal",
			   e->err == -EFBIG && e->errmsg[0] ? e->errmsg : "the export failed");
	} else if (e->err == 0 && e->done) {
		outcome = "complete";
		e->sent = export__count(e);
		http_stream_end(e->task.c);
	} else {
		/* cut short: the client sees a truncated chunked body, not a
		 * complete-looking file */
		http_stream_end(e->task.c);
	}
	json_decref(e->details);
	e->details = office_api_export_end_entry(e->id, e->sent, outcome);
	if (e->fz && e->details) { /* files sent, not records */
		json_object_del(e->details, "records");
		json_object_set_new(e->details, "files", json_integer((json_int_t)e->sent));
	}
	e->ended = true;
	if (!e->details) {
		export_free_job(e);
		return;
	}
	e->task.job = (struct writer_job){.kind = WJOB_CALL, .fn = export_audit_fn, .fn_ud = e};
	task_submit(&e->task, export_ended);
}

/* A whole-file format: the file made on the first step (the thread pool's
 * time for the whole export), then read out a piece a step. */
static void export_work_whole(struct export_job *e)
{
	struct server *srv = e->task.srv;
	if (e->fd < 0) {
		if (e->wo.format == EXPORT_XLSX) {
			/* An unlinked file from the start (nothing is left behind,
			 * even by a crash), which libxlsxwriter opens by the name
			 * /proc gives it. */
			char path[64];
			int fd = open(srv->cfg.data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
			if (fd < 0) {
				e->err = -errno;
				snprintf(e->errmsg, sizeof(e->errmsg), "cannot make a temporary file: %s",
					 strerror(errno));
				fprintf(stderr, "shahidi-server: export %s: %s\n", e->id, e->errmsg);
				return;
			}
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			e->err = export_xlsx_write(srv->forms, &e->wo, srv->store, path,
						   srv->cfg.data_dir, &e->records, e->errmsg,
						   sizeof(e->errmsg));
			if (e->err == 0 && lseek(fd, 0, SEEK_SET) < 0)
				e->err = -errno;
			if (e->err < 0)
				close(fd);
			else
				e->fd = fd;
		} else {
			e->err = export_stat_zip(srv->forms, &e->wo, srv->store, srv->cfg.data_dir,
						 &e->fd, &e->records, e->errmsg, sizeof(e->errmsg));
		}
		if (e->err < 0) {
			fprintf(stderr, "shahidi-server: export %s: %s\n", e->id, e->errmsg);
			return;
		}
	}
	size_t piece = 1 << 20;
	if ((e->err = buf_reserve(&e->out, piece)) < 0)
		return;
	ssize_t n = read(e->fd, e->out.data, piece);
	if (n < 0) {
		e->err = -errno;
		return;
	}
	e->out.len = (size_t)n;
	e->done = (size_t)n < piece;
}

static void export_work(struct task *t)
{
	struct export_job *e = (struct export_job *)t;
	buf_reset(&e->out);
	if (e->wo.format >= EXPORT_XLSX) {
		export_work_whole(e);
		return;
	}
	if (e->fz) { /* read from disk, a MiB a step, on the pool */
		e->err = upload_zip_next(e->fz, e->task.srv->store, &e->out, &e->done);
		return;
	}
	if (e->zx) { /* a zip is deflated already: no second compression */
		e->err = export_zip_next(e->zx, e->task.srv->store, EXPORT_PAGE, &e->out, &e->done);
		return;
	}
	if (!e->started && export_header(e->x, &e->out) < 0) {
		e->err = -ENOMEM;
		return;
	}
	int64_t n = export_page(e->x, e->task.srv->store, &e->cursor, EXPORT_PAGE, &e->out, &e->done);
	e->err = n < 0 ? (int)n : 0;
	if (e->err == 0 && e->z) {
		buf_reset(&e->zout);
		e->err = codec_deflater_write(e->z, e->out.data, e->out.len, e->done, &e->zout);
		struct buf swap = e->out;
		e->out = e->zout;
		e->zout = swap;
	}
}

static void export_drained(void *ud)
{
	struct export_job *e = ud;
	if (!http_conn_gone(e->task.c))
		e->sent = e->queued; /* the page before has left */
	if (e->done || http_conn_gone(e->task.c) || e->task.srv->stopping) {
		if (!e->done)
			e->err = -EPIPE;
		export_finish(e);
		return;
	}
	export_next(e);
}

static void export_page_done(struct task *t)
{
	struct export_job *e = (struct export_job *)t;
	if (e->err < 0 || http_conn_gone(e->task.c)) {
		export_finish(e);
		return;
	}
	if (!e->started) {
		e->started = true;
		char h[192];
		snprintf(h, sizeof(h), "Content-Disposition: attachment; filename=\"%s\"", e->filename);
		http_add_header(e->task.c, h);
		if (e->z) {
			http_add_header(e->task.c, e->zenc == CODEC_GZIP ? "Content-Encoding: gzip"
								    : "Content-Encoding: deflate");
		}
		http_add_header(e->task.c, "Vary: Accept-Encoding");
		if (http_stream_start(e->task.c, 200,
				      export__type(e->wo.format, e->zx || e->fz)) < 0) {
			e->err = -EPIPE;
			export_finish(e);
			return;
		}
	}
	if (!e->out.len) {
		export_drained(e);
		return;
	}
	e->queued = e->wo.format >= EXPORT_XLSX && !e->done ? 0 : export__count(e);
	if (http_stream_write(e->task.c, e->out.data, e->out.len, export_drained, e) < 0) {
		e->err = -EPIPE;
		export_finish(e);
	}
}

static void export_next(struct export_job *e)
{
	if (task_queue(&e->task, export_work, export_page_done) < 0) {
		e->err = -EAGAIN;
		export_finish(e);
	}
}

/* The start entry is durable: now the first byte may go. */
static void export_audited(struct task *t)
{
	struct export_job *e = (struct export_job *)t;
	if (t->job.result < 0) {
		http_error(t->c, task_status(t->job.result, 500), "audit_failed",
			   "the export could not be written to the audit log; nothing was exported");
		export_free_job(e);
		return;
	}
	if (http_conn_gone(e->task.c)) {
		e->err = -EPIPE; /* gone before the first byte: the end says so */
		export_finish(e);
		return;
	}
	export_next(e);
}

void office_export(struct http_conn *c, struct server *srv, struct http_request *req)
{
	char fmt[16] = "csv", form[65] = "incident_report", county[256] = "", since[64] = "",
	     flag[8];
	struct export_opts o = {.format = EXPORT_CSV};
	http_query_get(req->query, "format", fmt, sizeof(fmt));
	http_query_get(req->query, "form", form, sizeof(form));
	bool zip = !strcmp(fmt, "csvzip"), files = !strcmp(fmt, "files");
	if (!strcmp(fmt, "ndjson"))
		o.format = EXPORT_NDJSON;
	else if (!strcmp(fmt, "xlsx"))
		o.format = EXPORT_XLSX;
	else if (!strcmp(fmt, "sav"))
		o.format = EXPORT_SAV;
	else if (!strcmp(fmt, "dta"))
		o.format = EXPORT_DTA;
	else if (strcmp(fmt, "csv") && !zip && !files) {
		http_error(c, 400, "bad_query",
			   "format is csv, csvzip, ndjson, xlsx, sav, dta or files");
		return;
	}
	bool whole = o.format >= EXPORT_XLSX;
	if (http_query_get(req->query, "since", since, sizeof(since)) && since[0] &&
	    render_parse_time(since, &o.since_ms) < 0) {
		http_error(c, 400, "bad_query", "since is YYYY-MM-DD[THH:MM[:SS]] (UTC) or milliseconds");
		return;
	}
	o.include_deleted = http_query_get(req->query, "include_deleted", flag, sizeof(flag)) &&
			    !strcmp(flag, "1");
	o.include_sensitive = http_query_get(req->query, "include_sensitive", flag, sizeof(flag)) &&
			      !strcmp(flag, "1");
	/* Coordinators export their own counties, never the sensitive fields:
	 * scope.c decides who sees them, for every route. */
	bool coord = req->role != ROLE_ADMIN;
	if (!req->scope.sensitive && o.include_sensitive) {
		http_error(c, 403, "forbidden", "only admins export sensitive fields");
		return;
	}
	struct export_job *e = calloc(1, sizeof(*e));
	if (!e) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	size_t n = 0;
	if (http_query_get(req->query, "county", county, sizeof(county)) && county[0]) {
		for (char *tok = strtok(county, ","); tok && n < SCOPE_COUNTIES; tok = strtok(NULL, ",")) {
			json_t *valid;
			if (!export__county_known(srv->forms, form, tok, &valid)) {
				free(e);
				char msg[64];
				snprintf(msg, sizeof(msg), "unknown county %.8s: the codes are in counties", tok);
				json_t *j = json_pack("{s:s,s:s,s:o}", "error", "unknown_county",
						      "message", msg, "counties", valid);
				office__respond_json(c, 400, j);
				json_decref(j);
				return;
			}
			if (!scope_has(&req->scope, tok)) {
				free(e);
				http_error(c, 403, "forbidden", "that county is not one of yours");
				return;
			}
			snprintf(e->counties[n], 4, "%s", tok);
			e->cptr[n] = e->counties[n];
			n++;
		}
	}
	if (!n && coord) /* none asked for: all of the coordinator's (none = all counties) */
		n = scope_codes(&req->scope, e->counties, e->cptr);
	o.counties = e->cptr;
	o.n_counties = n;
	o.form_id = form;
	char err[200];
	e->fd = -1;
	int r = 0;
	if (whole && !export__form_known(srv->forms, form)) {
		snprintf(err, sizeof(err), "form %s is not loaded", form);
		r = -ENOENT;
	} else if (files) {
		/* as `shahidi export --with-files`: every file referenced by a
		 * record in the counties, sensitive ones only when asked */
		struct upload_scope us = {.reg = srv->forms,
					  .include_sensitive = o.include_sensitive,
					  .counties = e->cptr,
					  .n_counties = n};
		r = upload_zip_new(&us, srv->cfg.data_dir, 0, &e->fz);
		snprintf(err, sizeof(err), "%s", sh_strerror(r));
	} else if (!whole) {
		r = zip ? export_zip_new(srv->forms, &o, &e->zx, err, sizeof(err))
			: export_new(srv->forms, &o, &e->x, err, sizeof(err));
	}
	if (r < 0) {
		free(e);
		http_error(c, r == -ENOENT ? 404 : 500, r == -ENOENT ? "no_such_form" : "internal",
			   r == -ENOENT ? err : "cannot start the export");
		return;
	}
	if (whole && req->method != HTTP_HEAD && export__whole_running >= EXPORT_WHOLE_MAX) {
		free(e);
		http_add_header(c, "Retry-After: 60");
		http_error(c, 503, "busy",
			   "another xlsx, sav or dta export is being made: try again in a minute");
		return;
	}
	if (req->method == HTTP_HEAD) {
		/* The headers a GET would have, no body, nothing exported. */
		export_free(e->x);
		export_zip_free(e->zx);
		upload_zip_free(e->fz);
		free(e);
		if (http_stream_start(c, 200, export__type(o.format, zip || files)) == 0)
			http_stream_end(c);
		return;
	}
	snprintf(e->id, sizeof(e->id), "%016" PRIx64, sh_now_ms() << 16 | (++srv->exports & 0xffff));
	e->csv = o.format == EXPORT_CSV;
	/* Exports compress ~10 times: worth a core's time when the client takes
	 * it; a zip (an XLSX is one) is deflated already. */
	e->zenc = zip || whole || files ? CODEC_IDENTITY : http_accepted_encoding(c);
	if (e->zenc != CODEC_IDENTITY && codec_deflater_new(e->zenc, 6, &e->z) < 0) {
		e->z = NULL; /* sent as it is */
	}
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	/* form is a loaded form's id by now: [a-z0-9_], safe in a header */
	snprintf(e->filename, sizeof(e->filename), "shahidi-%s-%s.%s", files ? "files" : form,
		 stamp,
		 zip || files			? "zip"
		 : o.format == EXPORT_SAV	? "sav.zip"
		 : o.format == EXPORT_DTA	? "dta.zip"
		 : whole || o.format == EXPORT_NDJSON ? export_format_name(o.format)
						: "csv");
	if (whole) { /* its own copy: o points into this function's locals */
		e->slot = true;
		export__whole_running++;
		e->wo = o;
		e->wo.form_id = e->wform;
		snprintf(e->wform, sizeof(e->wform), "%s", form);
	}
	e->actor.device = req->device;
	e->actor.scope = req->scope;
	office__actor_of(req, e->actor.name);
	e->details = office_api_export_start_entry(e->id, &o);
	if (files && e->details &&
	    json_object_set_new(e->details, "format", json_string("files")) < 0) {
		json_decref(e->details);
		e->details = NULL;
	}
	task_hold(&e->task, c, false);
	if (!e->details) {
		http_error(c, 503, "busy", "out of memory");
		export_free_job(e);
		return;
	}
	e->task.job = (struct writer_job){.kind = WJOB_CALL, .fn = export_audit_fn, .fn_ud = e};
	task_submit(&e->task, export_audited);
}
