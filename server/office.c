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

void office__respond_json(struct http_conn *c, int status, json_t *j)
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

void office__actor_of(const struct http_request *req, char buf[64])
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
		office__respond_json(t->c, j->status ? j->status : 200, j->out);
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

/* The conflicts in the token's counties; the values of sensitive fields
 * only for a scope that sees them (scope.h: an admin's). */
static void run_conflicts(struct job *j)
{
	if (status_conflicts(j->task.srv->store, j->task.srv->forms, &j->req.scope,
			     j->req.scope.sensitive, &j->out) < 0)
		j->out = NULL;
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
	/* sensitive values only for a scope that sees them (an admin's) */
	int r = status_history(j->task.srv->store, j->task.srv->forms, id, j->req.scope.sensitive,
			       &j->out, counties, sizeof(counties));
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
		office__respond_json(t->c, 200, a->reply);
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
	office__actor_of(req, a->actor.name);
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
