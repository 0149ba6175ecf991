/* The office's export route (GET /v1/export): streamed a page at a time on
 * the thread pool, compressed when the client accepts it; format=csvzip
 * streams the long format's tables as one zip (export_zip.h). */
#include "office.h"
#include "office_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "auth.h"
#include "codec.h"
#include "common.h"
#include "export.h"
#include "export_zip.h"
#include "http.h"
#include "render.h"
#include "routes.h"
#include "server.h"
#include "writer.h"

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

/* An export's audit trail is two entries, committed by the writer: one
 * before the first byte leaves (who, what filters, sensitive or not) and
 * one after the last (records sent, complete or cut), tied by an id. An
 * export whose first entry cannot be written does not start. */
struct export_job {
	uv_work_t work;
	struct writer_job audit;   /* the start entry, then the end entry */
	struct http_conn *c;
	struct server *srv;
	struct exporter *x;
	struct export_zip *zx;     /* format=csvzip, instead of x */
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
	char actor[64];
	char id[17];
	json_t *details;           /* the entry the audit job writes */
	char counties[SERVER_MAX_SCOPE][4];
	const char *cptr[SERVER_MAX_SCOPE];
};

static void export_next(struct export_job *e);

static int export_audit_fn(struct store_txn *t, void *ud)
{
	struct export_job *e = ud;
	/* The writer may run this again after growing the map. */
	json_incref(e->details);
	return audit_record_txn(t, e->actor, e->ended ? "export_end" : "export", e->details);
}

static void export_free_job(struct export_job *e)
{
	json_decref(e->details);
	export_free(e->x);
	export_zip_free(e->zx);
	codec_deflater_free(e->z);
	buf_free(&e->zout);
	buf_free(&e->out);
	http_conn_unref(e->c);
	free(e);
	office_busy--;
}

static void export_ended(struct writer_job *job)
{
	struct export_job *e = job->ud;
	if (job->result < 0)
		fprintf(stderr, "shahidi-server: export %s: its end could not be audited: %s\n", e->id,
			sh_strerror(job->result));
	export_free_job(e);
}

static void export_finish(struct export_job *e)
{
	const char *outcome = e->err == -EPIPE || http_conn_gone(e->c) ? "cut" : "failed";
	if (!e->started) {
		http_error(e->c, 500, "internal", "the export failed");
	} else if (e->err == 0 && e->done) {
		outcome = "complete";
		e->sent = e->zx ? export_zip_written(e->zx) : export_written(e->x);
		http_stream_end(e->c);
	} else {
		/* cut short: the client sees a truncated chunked body, not a
		 * complete-looking file */
		http_stream_end(e->c);
	}
	json_decref(e->details);
	e->details = json_pack("{s:s,s:I,s:s}", "export_id", e->id, "records", (json_int_t)e->sent,
			       "outcome", outcome);
	e->ended = true;
	if (!e->details) {
		export_free_job(e);
		return;
	}
	e->audit = (struct writer_job){.kind = WJOB_CALL, .fn = export_audit_fn, .fn_ud = e,
				       .done = export_ended, .ud = e};
	writer_submit(e->srv->writer, &e->audit);
}

static void export_work(uv_work_t *w)
{
	struct export_job *e = w->data;
	buf_reset(&e->out);
	if (e->zx) { /* a zip is deflated already: no second compression */
		e->err = export_zip_next(e->zx, e->srv->store, EXPORT_PAGE, &e->out, &e->done);
		return;
	}
	if (!e->started && export_header(e->x, &e->out) < 0) {
		e->err = -ENOMEM;
		return;
	}
	int64_t n = export_page(e->x, e->srv->store, &e->cursor, EXPORT_PAGE, &e->out, &e->done);
	e->err = n < 0 ? (int)n : 0;
	if (e->err == 0 && e->z) {
		buf_reset(&e->zout);
		e->err = codec_deflater_write(e->z, e->out.data, e->out.len, e->done, &e->zout);
		struct buf t = e->out;
		e->out = e->zout;
		e->zout = t;
	}
}

static void export_drained(void *ud)
{
	struct export_job *e = ud;
	if (!http_conn_gone(e->c))
		e->sent = e->queued; /* the page before has left */
	if (e->done || http_conn_gone(e->c) || e->srv->stopping) {
		if (!e->done)
			e->err = -EPIPE;
		export_finish(e);
		return;
	}
	export_next(e);
}

static void export_page_done(uv_work_t *w, int status)
{
	struct export_job *e = w->data;
	(void)status;
	if (e->err < 0 || http_conn_gone(e->c)) {
		export_finish(e);
		return;
	}
	if (!e->started) {
		e->started = true;
		char h[192];
		snprintf(h, sizeof(h), "Content-Disposition: attachment; filename=\"%s\"", e->filename);
		http_add_header(e->c, h);
		if (e->z) {
			http_add_header(e->c, e->zenc == CODEC_GZIP ? "Content-Encoding: gzip"
								    : "Content-Encoding: deflate");
		}
		http_add_header(e->c, "Vary: Accept-Encoding");
		if (http_stream_start(e->c, 200, e->zx ? "application/zip"
						 : e->csv ? "text/csv; charset=utf-8"
							  : "application/x-ndjson") < 0) {
			e->err = -EPIPE;
			export_finish(e);
			return;
		}
	}
	if (!e->out.len) {
		export_drained(e);
		return;
	}
	e->queued = e->zx ? export_zip_written(e->zx) : export_written(e->x);
	if (http_stream_write(e->c, e->out.data, e->out.len, export_drained, e) < 0) {
		e->err = -EPIPE;
		export_finish(e);
	}
}

static void export_next(struct export_job *e)
{
	if (uv_queue_work(e->srv->loop, &e->work, export_work, export_page_done) < 0) {
		e->err = -EAGAIN;
		export_finish(e);
	}
}

/* The start entry is durable: now the first byte may go. */
static void export_audited(struct writer_job *job)
{
	struct export_job *e = job->ud;
	if (job->result < 0) {
		http_error(e->c, job->result == -ENOSPC ? 507 : 500, "audit_failed",
			   "the export could not be written to the audit log; nothing was exported");
		export_free_job(e);
		return;
	}
	if (http_conn_gone(e->c)) {
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
	bool zip = !strcmp(fmt, "csvzip");
	if (!strcmp(fmt, "ndjson"))
		o.format = EXPORT_NDJSON;
	else if (strcmp(fmt, "csv") && !zip) {
		http_error(c, 400, "bad_query", "format is csv, csvzip or ndjson");
		return;
	}
	if (http_query_get(req->query, "since", since, sizeof(since)) && since[0] &&
	    render_parse_time(since, &o.since_ms) < 0) {
		http_error(c, 400, "bad_query", "since is YYYY-MM-DD[THH:MM[:SS]] (UTC) or milliseconds");
		return;
	}
	o.include_deleted = http_query_get(req->query, "include_deleted", flag, sizeof(flag)) &&
			    !strcmp(flag, "1");
	o.include_sensitive = http_query_get(req->query, "include_sensitive", flag, sizeof(flag)) &&
			      !strcmp(flag, "1");
	/* Coordinators export their own counties, never the sensitive fields. */
	bool coord = req->role != ROLE_ADMIN;
	if (coord && o.include_sensitive) {
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
		for (char *tok = strtok(county, ","); tok && n < SERVER_MAX_SCOPE; tok = strtok(NULL, ",")) {
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
			if (!office__in_scope(req, tok)) {
				free(e);
				http_error(c, 403, "forbidden", "that county is not one of yours");
				return;
			}
			snprintf(e->counties[n], 4, "%s", tok);
			e->cptr[n] = e->counties[n];
			n++;
		}
	}
	if (!n && coord) {
		/* none asked for: all of the coordinator's (none = all counties) */
		for (; n < req->n_scope; n++) {
			snprintf(e->counties[n], 4, "%s", req->scope[n]);
			e->cptr[n] = e->counties[n];
		}
	}
	o.counties = e->cptr;
	o.n_counties = n;
	o.form_id = form;
	char err[200];
	int r = zip ? export_zip_new(srv->forms, &o, &e->zx, err, sizeof(err))
		    : export_new(srv->forms, &o, &e->x, err, sizeof(err));
	if (r < 0) {
		free(e);
		http_error(c, r == -ENOENT ? 404 : 500, r == -ENOENT ? "no_such_form" : "internal",
			   r == -ENOENT ? err : "cannot start the export");
		return;
	}
	if (req->method == HTTP_HEAD) {
		/* The headers a GET would have, no body, nothing exported. */
		export_free(e->x);
		export_zip_free(e->zx);
		free(e);
		if (http_stream_start(c, 200, zip ? "application/zip"
					      : o.format == EXPORT_CSV ? "text/csv; charset=utf-8"
								       : "application/x-ndjson") == 0)
			http_stream_end(c);
		return;
	}
	static uint64_t exports;
	snprintf(e->id, sizeof(e->id), "%016" PRIx64, sh_now_ms() << 16 | (++exports & 0xffff));
	e->c = c;
	e->srv = srv;
	e->csv = o.format == EXPORT_CSV;
	e->work.data = e;
	/* Exports compress ~10 times: worth a core's time when the client takes it. */
	e->zenc = zip ? CODEC_IDENTITY : http_accepted_encoding(c); /* a zip is deflated */
	if (e->zenc != CODEC_IDENTITY && codec_deflater_new(e->zenc, 6, &e->z) < 0) {
		e->z = NULL; /* sent as it is */
	}
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	/* form is a loaded form's id by now: [a-z0-9_], safe in a header */
	snprintf(e->filename, sizeof(e->filename), "shahidi-%s-%s.%s", form, stamp,
		 zip ? "zip" : e->csv ? "csv" : "ndjson");
	office__actor_of(req, e->actor);
	json_t *cj = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(cj, json_string(e->counties[i]));
	e->details = json_pack("{s:s,s:s,s:s,s:o,s:I,s:b,s:b}", "export_id", e->id, "format", fmt,
			       "form", form, "counties", cj, "since_ms", (json_int_t)o.since_ms,
			       "include_deleted", o.include_deleted, "include_sensitive",
			       o.include_sensitive);
	http_conn_ref(c);
	office_busy++;
	if (!e->details) {
		http_error(c, 503, "busy", "out of memory");
		export_free_job(e);
		return;
	}
	e->audit = (struct writer_job){.kind = WJOB_CALL, .fn = export_audit_fn, .fn_ud = e,
				       .done = export_audited, .ud = e};
	writer_submit(srv->writer, &e->audit);
}
