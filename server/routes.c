#include "routes.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "auth.h"
#include "common.h"
#include "files.h"
#include "http.h"
#include "office.h"
#include "ratelimit.h"
#include "server.h"
#include "shahidi.pb-c.h"

static uint64_t busy;  /* async work in flight (one server per process) */
static uint64_t pulls; /* of which pulls */

#define ANY_ROLE (1u << ROLE_DEVICE | 1u << ROLE_COORDINATOR | 1u << ROLE_ADMIN)
#define OFFICE (1u << ROLE_COORDINATOR | 1u << ROLE_ADMIN)
#define ADMIN (1u << ROLE_ADMIN)
#define JSON_BODY (64 * 1024)

static const struct route {
	const char *path;
	enum route_id id;
	int method;        /* the one method it takes (HEAD goes with GET) */
	uint32_t roles;    /* bit per role that may call it; 0 = no token */
	size_t body;       /* JSON body limit (push has its own) */
} routes[] = {
	{"/healthz", R_HEALTHZ, HTTP_GET, 0, 0},
	{"/v1/push", R_PUSH, HTTP_POST, 1u << ROLE_DEVICE, 0},
	{"/v1/pull", R_PULL, HTTP_GET, 1u << ROLE_DEVICE, 0},
	{"/v1/forms", R_FORMS, HTTP_GET, ANY_ROLE, 0},
	{"/", R_PAGE, HTTP_GET, 0, 0},
	{"/v1/status", R_STATUS, HTTP_GET, OFFICE, 0},
	{"/v1/conflicts", R_CONFLICTS, HTTP_GET, OFFICE, 0},
	{"/v1/conflicts/resolve", R_RESOLVE, HTTP_POST, OFFICE, JSON_BODY},
	{"/v1/assign", R_ASSIGN, HTTP_POST, OFFICE, JSON_BODY},
	{"/v1/history", R_HISTORY, HTTP_GET, OFFICE, 0},
	{"/v1/export", R_EXPORT, HTTP_GET, OFFICE, 0},
	{"/v1/devices", R_DEVICES, HTTP_GET, ADMIN, 0},
	{"/v1/devices/enrol", R_ENROL, HTTP_POST, ADMIN, JSON_BODY},
	{"/v1/devices/revoke", R_REVOKE, HTTP_POST, ADMIN, JSON_BODY},
	{"/metrics", R_METRICS, HTTP_GET, ADMIN, 0},
	{"/v1/files/", R_FILES, -1, ANY_ROLE, 0}, /* -1: a prefix, any method (files.c) */
};

const char *routes_name(int id)
{
	for (size_t i = 0; i < SH_ARRAY_SIZE(routes); i++)
		if ((int)routes[i].id == id)
			return routes[i].path;
	return "other";
}

uint64_t routes_busy(const struct server *srv)
{
	(void)srv;
	return busy + office_busy + files_busy();
}

uint64_t routes_others_busy(const struct server *srv)
{
	(void)srv;
	return pulls + office_busy;
}

/* ---- authentication ---- */

static bool authenticate(struct server *srv, struct http_request *req)
{
	struct store_txn *t;
	struct arena *a;
	store_device_t *d;
	bool ok = false;
	if (!req->token[0] || req->token_too_long)
		return false;
	if (!(a = arena_new()))
		return false;
	if (store_begin(srv->store, false, &t) == 0) {
		if (auth_check(t, a, req->token, strlen(req->token), &d) == 0) {
			req->device = d->id;
			req->role = d->role;
			snprintf(req->county, sizeof(req->county), "%s", d->county);
			/* A coordinator sees its counties; an admin, or a coordinator
			 * enrolled without a county, sees all. */
			req->n_scope = 0;
			if (d->role == ROLE_COORDINATOR) {
				for (size_t i = 0; i < d->n_counties && i < 47; i++)
					snprintf(req->scope[req->n_scope++], 4, "%s", d->counties[i]);
				if (!req->n_scope && d->county[0])
					snprintf(req->scope[req->n_scope++], 4, "%s", d->county);
			}
			ok = true;
		}
		store_abort(t);
	}
	arena_free(a);
	return ok;
}

void routes_on_headers(struct http_conn *c, struct http_request *req)
{
	struct server *srv = http_conn_server(c);
	const struct route *rt = NULL;
	for (size_t i = 0; i < SH_ARRAY_SIZE(routes); i++)
		if (!strcmp(req->path, routes[i].path) ||
		    (routes[i].method < 0 && !strncmp(req->path, routes[i].path, strlen(routes[i].path))))
			rt = &routes[i];
	if (!rt) {
		req->route = "other";
		http_error(c, 404, "not_found", "no such endpoint");
		return;
	}
	req->route = rt->path;
	req->route_id = rt->id;
	if (rt->method >= 0 && req->method != rt->method && !(rt->method == HTTP_GET && req->method == HTTP_HEAD)) {
		http_add_header(c, rt->method == HTTP_GET ? "Allow: GET, HEAD" : "Allow: POST");
		http_error(c, 405, "method_not_allowed", "this endpoint does not take that method");
		return;
	}
	if (rt->roles) {
		uint64_t now = sh_now_ms();
		/* Every token is looked up, whatever its address did before:
		 * failures cannot lock out successes (phones behind one carrier
		 * NAT share an address with whoever guesses). The limit only
		 * makes further failures answer 429 and lose their connection. */
		if (!authenticate(srv, req)) {
			if (!ratelimit_allow(srv->auth_limit, req->peer, now)) {
				srv->stats.auth_throttled++;
				http_add_header(c, "Retry-After: 60");
				http_error(c, 429, "too_many_failed_attempts",
					   "too many refused tokens from this address; try again later");
				return;
			}
			/* Missing, malformed, unknown or revoked: one answer for all,
			 * so that nobody learns which devices exist. */
			ratelimit_fail(srv->auth_limit, req->peer, now);
			srv->stats.auth_failures++;
			http_add_header(c, "WWW-Authenticate: Bearer");
			http_error(c, 401, "unauthorized", "a valid bearer token is required");
			return;
		}
		if (!(rt->roles & (1u << req->role))) {
			http_error(c, 403, "role_not_allowed", "this token's role may not use this endpoint");
			return;
		}
	}
	req->body_limit = rt->body;
	if (rt->id == R_FILES)
		files_on_headers(c, srv, req);
	if (rt->id == R_PUSH) {
		if (req->enc_unsupported) {
			http_error(c, 415, "unsupported_encoding",
				   "Content-Encoding must be deflate, gzip or identity");
			return;
		}
		req->body_limit = srv->cfg.max_body;
	}
}

/* ---- push ---- */

struct push_work {
	uv_work_t work;
	struct http_conn *c;
	struct server *srv;
	const uint8_t *body;    /* the connection's; it is not parsed meanwhile */
	size_t len;
	enum codec_enc enc;
	int r;
	struct form_verdict verdict;
	struct writer_job job;  /* job.batch: the decoded batch */
};

static void push_decode(uv_work_t *w)
{
	struct push_work *p = w->data;
	p->r = sync_decode(p->srv->forms, &p->srv->cfg.sync, p->body, p->len, p->enc, sh_now_ms(),
			   &p->job.batch, &p->verdict);
}

static void push_free(struct push_work *p)
{
	struct server *srv = p->srv;
	sync_batch_free(p->job.batch);
	http_conn_unref(p->c);
	free(p);
	busy--;
	http_kick(srv);
}

static void push_committed(struct writer_job *job)
{
	struct push_work *p = job->ud;
	struct server *srv = p->srv;
	struct http_conn *c = p->c;
	switch (job->result) {
	case 0:
		srv->stats.batches++;
		srv->stats.batches_replayed += job->res.replay;
		srv->stats.changes_applied += job->res.replay ? 0 : job->res.applied;
		srv->stats.changes_duplicate += job->res.replay ? sync_batch_changes(job->batch)
								: job->res.duplicate;
		srv->stats.changes_rejected += job->res.replay ? 0 : job->res.rejected;
		http_respond(c, 200, "application/x-protobuf", job->res.response,
			     job->res.response_len);
		break;
	case -EEXIST:
		http_error(c, 409, "batch_seq_reused",
			   "this batch number was used before with other content; nothing was stored");
		break;
	case -ENOENT:
		http_error(c, 401, "unauthorized", "a valid bearer token is required");
		break;
	case -ENOSPC:
		http_error(c, 507, "storage_full",
			   "the server's store is full; nothing was stored, try again later");
		break;
	default:
		http_error(c, 500, "internal", "the batch could not be stored; nothing was stored");
		break;
	}
	push_free(p);
}

static void push_decoded(uv_work_t *w, int status)
{
	struct push_work *p = w->data;
	struct http_conn *c = p->c;
	struct http_request *req = http_conn_request(c);
	(void)status;
	if (p->r < 0) {
		int code = p->r == -EMSGSIZE ? 413 : p->r == -ENOMEM ? 503 : 400;
		http_error(c, code, p->verdict.code[0] ? p->verdict.code : "bad_batch",
			   p->verdict.reason[0] ? p->verdict.reason : sh_strerror(p->r));
		push_free(p);
		return;
	}
	if (sync_batch_device(p->job.batch) != req->device) {
		http_error(c, 403, "device_mismatch",
			   "the batch names another device than the token's");
		push_free(p);
		return;
	}
	req->changes = (uint32_t)sync_batch_changes(p->job.batch);
	p->job.kind = WJOB_PUSH;
	p->job.done = push_committed;
	p->job.ud = p;
	writer_submit(p->srv->writer, &p->job);
}

static void handle_push(struct http_conn *c, struct server *srv, struct http_request *req)
{
	struct push_work *p = calloc(1, sizeof(*p));
	if (!p) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	p->c = c;
	p->srv = srv;
	p->body = req->body;
	p->len = req->body_len;
	p->enc = req->enc;
	p->work.data = p;
	http_conn_ref(c);
	busy++;
	/* Inflating and decoding run on the thread pool, off the loop. */
	if (uv_queue_work(srv->loop, &p->work, push_decode, push_decoded) < 0) {
		http_error(c, 503, "busy", "cannot queue the batch");
		push_free(p);
	}
}

/* ---- pull ---- */

struct pull_work {
	uv_work_t work;
	struct http_conn *c;
	struct server *srv;
	uint64_t device, cursor;
	uint32_t limit;
	enum codec_enc enc;        /* what the client accepts */
	int r;
	struct sync_pull_info info;
	struct buf out, packed;
};

static void pull_read(uv_work_t *w)
{
	struct pull_work *p = w->data;
	struct store_txn *t;
	p->r = store_begin(p->srv->store, false, &t);
	if (p->r < 0)
		return;
	p->r = sync_pull(t, p->device, p->cursor, p->limit, (size_t)4 << 20, &p->out, &p->info);
	store_abort(t);
	/* Compressed here, not on the event loop: a full page (1,000
	 * changes, ~1 MB) takes tens of ms that every other phone would wait
	 * through. */
	if (p->r == 0)
		http_compress(p->enc, p->out.data, p->out.len, &p->packed);
}

static void pull_done(uv_work_t *w, int status)
{
	struct pull_work *p = w->data;
	(void)status;
	if (p->r < 0) {
		http_error(p->c, 500, "internal", "the feed could not be read");
	} else {
		if (p->packed.data)
			http_respond_encoded(p->c, 200, "application/x-protobuf", p->enc,
					     p->packed.data, p->packed.len);
		else
			http_respond_encoded(p->c, 200, "application/x-protobuf", CODEC_IDENTITY,
					     p->out.data, p->out.len);
		/* Note the pull (time, and the cursor the device says it has):
		 * nobody waits for that commit. */
		struct writer_job *j = calloc(1, sizeof(*j));
		if (j) {
			j->kind = WJOB_NOTE_PULL;
			j->device = p->device;
			j->cursor = p->cursor;
			writer_submit(p->srv->writer, j);
		}
	}
	struct server *srv = p->srv;
	buf_free(&p->out);
	buf_free(&p->packed);
	http_conn_unref(p->c);
	free(p);
	busy--;
	pulls--;
	http_kick(srv);
}

/* Reads name=<decimal> from a query string. 0 found, -ENOENT, -EINVAL. */
static int query_u64(const char *q, const char *name, uint64_t *ret)
{
	char v[32], *end;
	if (!http_query_get(q, name, v, sizeof(v)))
		return -ENOENT;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (v[0] < '0' || v[0] > '9' || *end || errno)
		return -EINVAL;
	*ret = x;
	return 0;
}

static void handle_pull(struct http_conn *c, struct server *srv, struct http_request *req)
{
	uint64_t cursor = 0, limit = srv->cfg.pull_limit;
	int r1 = query_u64(req->query, "cursor", &cursor);
	int r2 = query_u64(req->query, "limit", &limit);
	if (r1 == -EINVAL || r2 == -EINVAL || limit == 0) {
		http_error(c, 400, "bad_query", "cursor and limit are decimal numbers, limit >= 1");
		return;
	}
	struct pull_work *p = calloc(1, sizeof(*p));
	if (!p) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	p->c = c;
	p->srv = srv;
	p->device = req->device;
	p->cursor = cursor;
	p->limit = (uint32_t)SH_MIN(limit, (uint64_t)srv->cfg.pull_limit);
	p->enc = http_accepted_encoding(c);
	p->work.data = p;
	http_conn_ref(c);
	busy++;
	pulls++;
	if (uv_queue_work(srv->loop, &p->work, pull_read, pull_done) < 0) {
		p->r = -EAGAIN;
		pull_done(&p->work, 0);
	}
}

void routes_on_request(struct http_conn *c, struct http_request *req)
{
	struct server *srv = http_conn_server(c);
	switch (req->route_id) {
	case R_HEALTHZ: {
		static const char ok[] = "{\"status\":\"ok\"}\n";
		http_respond(c, 200, "application/json", (const uint8_t *)ok, sizeof(ok) - 1);
		break;
	}
	case R_FORMS:
		http_respond(c, 200, "application/x-protobuf", srv->forms_packed,
			     srv->forms_packed_len);
		break;
	case R_PUSH:
		handle_push(c, srv, req);
		break;
	case R_PULL:
		handle_pull(c, srv, req);
		break;
	case R_PAGE: office_page(c, srv, req); break;
	case R_STATUS: office_status(c, srv, req); break;
	case R_CONFLICTS: office_conflicts(c, srv, req); break;
	case R_RESOLVE: office_resolve(c, srv, req); break;
	case R_ASSIGN: office_assign(c, srv, req); break;
	case R_HISTORY: office_history(c, srv, req); break;
	case R_EXPORT: office_export(c, srv, req); break;
	case R_DEVICES: office_devices(c, srv, req); break;
	case R_ENROL: office_enrol(c, srv, req); break;
	case R_REVOKE: office_revoke(c, srv, req); break;
	case R_METRICS: office_metrics(c, srv, req); break;
	case R_FILES: files_on_request(c, srv, req); break;
	default:
		http_error(c, 404, "not_found", "no such endpoint");
		break;
	}
}
