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

/* Built by server/embed_page.py from server/status.html. */
extern const char status_page_html[];
extern const size_t status_page_len;

void office_page(struct http_conn *c, struct server *srv, struct http_request *req)
{
	(void)srv;
	(void)req;
	/* The page is static and self-contained: no CDN, no inline data. It
	 * asks for a token and fetches /v1/status with it. */
	http_add_header(c, "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
			   "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
			   "frame-ancestors 'none'");
	http_add_header(c, "Referrer-Policy: no-referrer");
	http_respond(c, 200, "text/html; charset=utf-8", (const uint8_t *)status_page_html,
		     status_page_len);
}

static void respond_json(struct http_conn *c, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (!s) {
		http_error(c, 500, "internal", "out of memory");
		return;
	}
	size_t n = strlen(s);
	s[n] = '\n'; /* json_dumps leaves room for the NUL: reuse it */
	http_respond(c, status, "application/json", (const uint8_t *)s, n + 1);
	free(s);
}

static void actor_of(const struct http_request *req, char buf[64])
{
	char hex[17];
	sh_device_fmt(req->device, hex);
	snprintf(buf, 64, "device:%s", hex);
}

/* ---- read-only JSON work on the thread pool ---- */

struct job {
	struct task task;
	struct http_request req;   /* a copy: scope, device, query */
	char query[512];
	void (*run)(struct job *j);
	json_t *out;
	int status;
	const char *code;
	char msg[200];
};

static void job_work(struct task *t)
{
	struct job *j = (struct job *)t;
	j->run(j);
}

static void job_done(struct task *t)
{
	struct job *j = (struct job *)t;
	if (j->out)
		respond_json(t->c, j->status ? j->status : 200, j->out);
	else
		http_error(t->c, j->status ? j->status : 500, j->code ? j->code : "internal",
			   j->msg[0] ? j->msg : "the request failed");
	json_decref(j->out);
	task_release(t);
	free(j);
}

static void start_job(struct http_conn *c, struct server *srv, struct http_request *req,
		      void (*run)(struct job *))
{
	struct job *j = calloc(1, sizeof(*j));
	(void)srv;
	if (!j) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	j->req = *req;
	snprintf(j->query, sizeof(j->query), "%s", req->query);
	j->req.query = j->query;
	j->req.path = NULL;
	j->req.body = NULL;
	j->run = run;
	task_hold(&j->task, c, false);
	if (task_queue(&j->task, job_work, job_done) < 0) {
		j->status = 503;
		j->code = "busy";
		job_done(&j->task);
	}
}

static void run_status(struct job *j)
{
	char sd[32];
	struct status_opts o = {.scope = j->req.scope, .silent_days = 7, .now_ms = sh_now_ms()};
	if (http_query_get(j->req.query, "silent_days", sd, sizeof(sd))) {
		char *end;
		o.silent_days = strtod(sd, &end);
		if (end == sd || *end || !(o.silent_days >= 0 && o.silent_days <= 36500)) {
			j->status = 400;
			j->code = "bad_query";
			snprintf(j->msg, sizeof(j->msg), "silent_days is a number of days, 0 to 36500");
			return;
		}
	}
	/* all_counties=1: a row for every county in scope, empty ones too (the
	 * page's "show empty counties") */
	o.all_counties = http_query_get(j->req.query, "all_counties", sd, sizeof(sd)) &&
			 !strcmp(sd, "1");
	if (status_collect(j->task.srv->store, j->task.srv->forms, &o, &j->out) < 0)
		j->out = NULL;
}

void office_status(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_job(c, srv, req, run_status);
}

static void run_conflicts(struct job *j)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	json_t *arr = json_array();
	uint64_t seq = 0;
	merge_rec_t *rec;
	int r = -ENOMEM;
	if (!a || !arr || (r = store_begin(j->task.srv->store, false, &t)) < 0)
		goto out;
	/* Open conflicts are few; the list is capped all the same. */
	while (json_array_size(arr) < 5000 && (r = store_conflict_next(t, a, &seq, &rec)) == 1) {
		const struct form *f = form_registry_find(j->task.srv->forms, rec->form_id, rec->form_version);
		char county[4];
		if (scope_has_record(&j->req.scope, rec, f, county)) {
			/* Only the values in conflict: resolving them is the
			 * coordinator's work; the rest of the report is not needed. */
			json_t *o = render_record_json(rec, f, true);
			json_object_set_new(o, "county", json_string(county));
			json_array_append_new(arr, o);
		}
		arena_reset(a);
	}
	store_abort(t);
	if (r >= 0) {
		j->out = json_pack("{s:I,s:o}", "open_conflicts", (json_int_t)json_array_size(arr),
				   "records", arr);
		arr = NULL;
	}
out:
	json_decref(arr);
	arena_free(a);
}

void office_conflicts(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_job(c, srv, req, run_conflicts);
}

static void run_history(struct job *j)
{
	char rid[64], counties[200] = "";
	uint8_t id[16];
	if (!http_query_get(j->req.query, "record", rid, sizeof(rid)) || uuid_parse(rid, id) < 0) {
		j->status = 400;
		j->code = "bad_query";
		snprintf(j->msg, sizeof(j->msg), "record=UUID is required");
		return;
	}
	int r = status_history(j->task.srv->store, j->task.srv->forms, id, &j->out, counties, sizeof(counties));
	/* in scope when any county the record has been in is */
	if (r == 0 && !scope_has_any(&j->req.scope, counties)) {
		json_decref(j->out);
		j->out = NULL;
		r = -ENOENT; /* out of scope looks like absent: no leak across counties */
	}
	if (r == -ENOENT) {
		j->status = 404;
		j->code = "no_such_record";
		snprintf(j->msg, sizeof(j->msg), "no such record");
	}
}

void office_history(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_job(c, srv, req, run_history);
}

static void run_daily(struct job *j)
{
	char dq[16];
	unsigned days = 30;
	if (http_query_get(j->req.query, "days", dq, sizeof(dq))) {
		char *end;
		unsigned long n = strtoul(dq, &end, 10);
		if (end == dq || *end || n < 1 || n > DAILY_MAX_DAYS) {
			j->status = 400;
			j->code = "bad_query";
			snprintf(j->msg, sizeof(j->msg), "days is a whole number of days, 1 to %d",
				 DAILY_MAX_DAYS);
			return;
		}
		days = (unsigned)n;
	}
	if (daily_collect(j->task.srv->store, &j->req.scope, sh_now_ms(), days, &j->out) < 0)
		j->out = NULL;
}

/* Pushes per county and server day: a coordinator sees its counties'. */
void office_daily(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_job(c, srv, req, run_daily);
}

/* ---- actions through the writer ---- */

struct action {
	struct task task;          /* task.job: a WJOB_CALL of action_fn */
	struct http_request req;
	struct office_actor actor;
	json_t *body;              /* the request's JSON */
	json_t *reply;             /* set by the action */
	int status;                /* an HTTP error instead of the reply */
	char code[40];
	char msg[400];
	int (*act)(struct store_txn *t, struct action *a);
	struct auth_cache *tokens; /* enrol, revoke: the tokens after it */
};

static void action_done(struct task *t)
{
	struct action *a = (struct action *)t;
	int r = t->job.result;
	if (r == 0 && a->reply)
		respond_json(t->c, 200, a->reply);
	else if (a->status)
		http_error(t->c, a->status, a->code, a->msg);
	else if (r == -ENOSPC)
		http_error(t->c, task_status(r, 500), "storage_full", "the store is full");
	else
		http_error(t->c, task_status(r, 500), "internal", sh_strerror(r));
	if (r == 0 && a->reply)
		server_tokens_install(t->srv, a->tokens);
	else
		auth_cache_free(a->tokens);
	json_decref(a->reply);
	json_decref(a->body);
	task_release(t);
	free(a);
}

#define FAIL(st, c_, ...)                                              \
	do {                                                           \
		a->status = st;                                        \
		snprintf(a->code, sizeof(a->code), "%s", c_);          \
		snprintf(a->msg, sizeof(a->msg), __VA_ARGS__);         \
		return -ECANCELED;                                     \
	} while (0)

/* An office_api refusal as an HTTP answer (-ECANCELED: nothing written);
 * anything else as it is. */
static int refused(struct action *a, int r, const struct office_verdict *v)
{
	int st = r == -ENOENT ? 404 : r == -EINVAL ? 400 : r == -EALREADY ? 409 : r == -EPERM ? 403 : 0;
	if (!st || !v->code[0])
		return r;
	a->status = st;
	snprintf(a->code, sizeof(a->code), "%s", v->code);
	snprintf(a->msg, sizeof(a->msg), "%s", v->msg);
	return -ECANCELED;
}

/* Actions run in the writer's transaction. Returning -ECANCELED refuses
 * the request without failing the others committed with it. */
static int action_fn(struct store_txn *t, void *ud);

static void start_action(struct http_conn *c, struct server *srv, struct http_request *req,
			 int (*fn)(struct store_txn *, struct action *))
{
	json_error_t je;
	json_t *body = json_loadb((const char *)req->body, req->body_len, 0, &je);
	if (!json_is_object(body)) {
		json_decref(body);
		http_error(c, 400, "bad_json", "the body must be a JSON object");
		return;
	}
	struct action *a = calloc(1, sizeof(*a));
	if (!a) {
		json_decref(body);
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	(void)srv;
	a->req = *req;
	a->req.body = NULL;
	a->body = body;
	a->actor.device = req->device;
	a->actor.scope = req->scope;
	actor_of(req, a->actor.name);
	a->task.job.kind = WJOB_CALL;
	a->task.job.fn = action_fn;
	a->task.job.fn_ud = a;
	a->act = fn;
	task_hold(&a->task, c, false);
	task_submit(&a->task, action_done);
}

static int action_fn(struct store_txn *t, void *ud)
{
	struct action *a = ud;
	/* store_write may run this again after growing the map. */
	json_decref(a->reply);
	a->reply = NULL;
	a->status = 0;
	auth_cache_free(a->tokens);
	a->tokens = NULL;
	int r = a->act(t, a);
	if (r == -ECANCELED)
		return 0; /* refused: nothing written, the transaction goes on */
	return r;
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static int do_resolve(struct store_txn *t, struct action *a)
{
	struct office_resolve q = {0};
	struct office_verdict v = {{0}};
	const char *rid = jstr(a->body, "record_id");
	json_t *field = json_object_get(a->body, "field");
	json_t *take = json_object_get(a->body, "take"), *val = json_object_get(a->body, "value");
	json_t *del = json_object_get(a->body, "deleted");
	if (!rid || uuid_parse(rid, q.record_id) < 0)
		FAIL(400, "bad_request", "record_id must be a UUID");
	const char *inst = jstr(a->body, "instance");
	uint8_t iid[16];
	if (inst && uuid_parse(inst, iid) < 0)
		FAIL(400, "bad_request", "instance must be a UUID (a repeat-group instance's id)");
	q.instance = inst ? iid : NULL;
	if (json_is_boolean(del)) {
		q.how = RESOLVE_DELETED;
		q.deleted = json_is_true(del);
	} else {
		q.field_name = json_string_value(field);
		q.field_number = json_is_integer(field) && json_integer_value(field) > 0 &&
					 json_integer_value(field) <= UINT32_MAX
				 ? (uint32_t)json_integer_value(field)
				 : 0;
		if (json_is_string(take)) {
			q.how = RESOLVE_TAKE;
			if (sh_device_parse(json_string_value(take), &q.take_device) < 0)
				FAIL(400, "bad_request", "take must be a device id (16 hex digits)");
		} else if (val) {
			q.how = RESOLVE_VALUE;
			q.value = val;
		} else {
			FAIL(400, "bad_request", "give take (a device id), value, or deleted");
		}
	}
	uint64_t log_seq;
	int r = office_api_resolve(t, a->task.srv->forms, &a->actor, &q, sh_now_ms(), &log_seq, &v);
	if (r < 0)
		return refused(a, r, &v);
	a->reply = json_pack("{s:b,s:I}", "resolved", 1, "log_seq", (json_int_t)log_seq);
	return 0;
}

void office_resolve(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_action(c, srv, req, do_resolve);
}

static int do_assign(struct store_txn *t, struct action *a)
{
	const char *rid = jstr(a->body, "record_id"), *dev = jstr(a->body, "device");
	struct office_verdict v = {{0}};
	uint8_t id[16];
	uint64_t device;
	if (!rid || uuid_parse(rid, id) < 0 || !dev || sh_device_parse(dev, &device) < 0)
		FAIL(400, "bad_request", "record_id (a UUID) and device (16 hex digits) are required");
	int r = office_api_assign(t, a->task.srv->forms, &a->actor, id, device, &v);
	if (r < 0)
		return refused(a, r, &v);
	a->reply = json_pack("{s:b}", "assigned", 1);
	return 0;
}

void office_assign(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_action(c, srv, req, do_assign);
}

/* The enrolment's QR code (qr.h) for the reply: its payload and the code
 * as SVG. */
static int enrol__qr(const char *url, uint64_t id, const char *token, json_t *reply)
{
	struct buf payload = {0}, svg = {0};
	struct qr *q = NULL;
	int r = qr_enrolment(url, id, token, &payload, &q);
	if (r == 0)
		r = qr_svg(q, 6, &svg);
	if (r == 0 && (json_object_set_new(reply, "payload", json_string((const char *)payload.data)) ||
		       json_object_set_new(reply, "qr_svg", json_stringn((const char *)svg.data, svg.len))))
		r = -ENOMEM;
	if (payload.data) /* it holds the token */
		sodium_memzero(payload.data, payload.len);
	buf_free(&payload);
	buf_free(&svg);
	qr_free(q);
	return r;
}

static int do_enrol(struct store_txn *t, struct action *a)
{
	const char *role = jstr(a->body, "role"), *url = jstr(a->body, "url");
	struct auth_enrol e = {jstr(a->body, "name"), jstr(a->body, "county"), ROLE_DEVICE};
	struct office_verdict v = {{0}};
	char err[160];
	if (role && store_role_parse(role, &e.role) < 0)
		FAIL(400, "bad_request", "role is device, coordinator, admin or metrics");
	/* Checked before anything is written: a refusal (-ECANCELED) after
	 * the enrolment would still commit it. */
	if (json_object_get(a->body, "url") && !url)
		FAIL(400, "bad_request", "url must be a string: the server's address as the phone "
					 "reaches it (https://...)");
	if (url && qr_url_check(url, err, sizeof(err)) < 0)
		FAIL(400, "bad_request", "url: %s", err);
	e.qr = url != NULL;
	uint64_t id;
	char token[AUTH_TOKEN_LEN + 1], hex[17];
	int r = office_api_enrol(t, &a->actor, &e, sh_now_ms(), &id, token, &v);
	if (r < 0)
		return refused(a, r, &v);
	if ((r = auth_cache_build(t, &a->tokens)) < 0)
		goto out;
	sh_device_fmt(id, hex);
	/* The token is shown once, here (and in its code); only its hash is
	 * stored. A code that cannot be made fails the transaction: no device
	 * is left that nobody got the token of. */
	a->reply = json_pack("{s:s,s:s}", "id", hex, "token", token);
	if (!a->reply)
		r = -ENOMEM;
	else if (url)
		r = enrol__qr(url, id, token, a->reply);
out:
	sodium_memzero(token, sizeof(token));
	return r;
}

void office_enrol(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_action(c, srv, req, do_enrol);
}

static int do_revoke(struct store_txn *t, struct action *a)
{
	const char *dev = jstr(a->body, "id");
	struct office_verdict v = {{0}};
	uint64_t device;
	if (!dev || sh_device_parse(dev, &device) < 0)
		FAIL(400, "bad_request", "id (16 hex digits) is required");
	int r = office_api_revoke(t, &a->actor, device, sh_now_ms(), &v);
	if (r < 0)
		return refused(a, r, &v);
	if ((r = auth_cache_build(t, &a->tokens)) < 0)
		return r;
	a->reply = json_pack("{s:b}", "revoked", 1);
	return 0;
}

void office_revoke(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_action(c, srv, req, do_revoke);
}

static void run_devices(struct job *j)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	json_t *arr = json_array();
	uint64_t id = 0;
	store_device_t *d;
	int r = -ENOMEM;
	if (!a || !arr || (r = store_begin(j->task.srv->store, false, &t)) < 0)
		goto out;
	while ((r = store_device_next(t, a, &id, &d)) == 1) {
		char hex[17], when[32];
		sh_device_fmt(d->id, hex);
		render_time_ms(d->enrolled_ms, when);
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:b,s:s}", "id", hex, "name",
						     d->name, "role", store_role_name(d->role),
						     "county", d->county, "revoked", d->revoked,
						     "enrolled", when));
		arena_reset(a);
	}
	store_abort(t);
	if (r >= 0) {
		j->out = json_pack("{s:o}", "devices", arr);
		arr = NULL;
	}
out:
	json_decref(arr);
	arena_free(a);
}

void office_devices(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_job(c, srv, req, run_devices);
}

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
		for (char *tok = strtok(county, ","); tok && n < SCOPE_COUNTIES; tok = strtok(NULL, ",")) {
			json_t *valid;
			if (!export__county_known(srv->forms, form, tok, &valid)) {
				free(e);
				char msg[64];
				snprintf(msg, sizeof(msg), "unknown county %.8s: the codes are in counties", tok);
				json_t *j = json_pack("{s:s,s:s,s:o}", "error", "unknown_county",
						      "message", msg, "counties", valid);
				respond_json(c, 400, j);
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
	actor_of(req, e->actor.name);
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
