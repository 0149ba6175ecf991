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
#include "metrics.h"
#include "office.h"
#include "ratelimit.h"
#include "server.h"
#include "shahidi.pb-c.h"
#include "task.h"

#define ANY_ROLE (1u << ROLE_DEVICE | 1u << ROLE_COORDINATOR | 1u << ROLE_ADMIN)
#define OFFICE (1u << ROLE_COORDINATOR | 1u << ROLE_ADMIN)
#define ADMIN (1u << ROLE_ADMIN)
#define SCRAPE (1u << ROLE_ADMIN | 1u << ROLE_METRICS)
#define JSON_BODY (64 * 1024)

typedef void route_fn(struct http_conn *c, struct server *srv, struct http_request *req);
static route_fn handle_healthz, handle_forms, handle_push, handle_pull;

/* The endpoints, each with what answers it (as Redis's command table). */
static const struct route {
	const char *path;
	enum route_id id;
	int method;        /* the one method it takes (HEAD goes with GET) */
	uint32_t roles;    /* bit per role that may call it; 0 = no token */
	size_t body;       /* JSON body limit (push has its own) */
	route_fn *handler;
	enum route_group group; /* its label in the latency histogram */
} routes[] = {
	{"/healthz", R_HEALTHZ, HTTP_GET, 0, 0, handle_healthz, RG_HEALTHZ},
	{"/v1/push", R_PUSH, HTTP_POST, 1u << ROLE_DEVICE, 0, handle_push, RG_PUSH},
	{"/v1/pull", R_PULL, HTTP_GET, 1u << ROLE_DEVICE, 0, handle_pull, RG_PULL},
	{"/v1/forms", R_FORMS, HTTP_GET, ANY_ROLE, 0, handle_forms, RG_OTHER},
	{"/", R_PAGE, HTTP_GET, 0, 0, office_page, RG_OFFICE},
	{"/v1/status", R_STATUS, HTTP_GET, OFFICE, 0, office_status, RG_OFFICE},
	{"/v1/conflicts", R_CONFLICTS, HTTP_GET, OFFICE, 0, office_conflicts, RG_OFFICE},
	{"/v1/conflicts/resolve", R_RESOLVE, HTTP_POST, OFFICE, JSON_BODY, office_resolve, RG_OFFICE},
	{"/v1/assign", R_ASSIGN, HTTP_POST, OFFICE, JSON_BODY, office_assign, RG_OFFICE},
	{"/v1/history", R_HISTORY, HTTP_GET, OFFICE, 0, office_history, RG_OFFICE},
	{"/v1/status/daily", R_DAILY, HTTP_GET, OFFICE, 0, office_daily, RG_OFFICE},
	{"/v1/export", R_EXPORT, HTTP_GET, OFFICE, 0, office_export, RG_EXPORT},
	{"/v1/devices", R_DEVICES, HTTP_GET, ADMIN, 0, office_devices, RG_OFFICE},
	{"/v1/devices/enrol", R_ENROL, HTTP_POST, ADMIN, JSON_BODY, office_enrol, RG_OFFICE},
	{"/v1/devices/revoke", R_REVOKE, HTTP_POST, ADMIN, JSON_BODY, office_revoke, RG_OFFICE},
	{"/metrics", R_METRICS, HTTP_GET, SCRAPE, 0, metrics_serve, RG_METRICS},
	{"/v1/files/", R_FILES, -1, ANY_ROLE, 0, files_on_request, RG_FILES}, /* -1: a prefix, any method */
};

const char *routes_name(int id)
{
	for (size_t i = 0; i < SH_ARRAY_SIZE(routes); i++)
		if ((int)routes[i].id == id)
			return routes[i].path;
	return "other";
}

enum route_group routes_group(int id)
{
	for (size_t i = 0; i < SH_ARRAY_SIZE(routes); i++)
		if ((int)routes[i].id == id)
			return routes[i].group;
	return RG_OTHER;
}

const char *routes_group_name(enum route_group g)
{
	static const char *const names[RG__COUNT] = {
		[RG_PUSH] = "push",	    [RG_PULL] = "pull",       [RG_FILES] = "files",
		[RG_OFFICE] = "office",     [RG_EXPORT] = "export",   [RG_METRICS] = "metrics",
		[RG_HEALTHZ] = "healthz",   [RG_OTHER] = "other",
	};
	return (unsigned)g < RG__COUNT ? names[g] : "other";
}

/* ---- authentication ---- */

/* The token is checked against srv->tokens, without a transaction, while
 * no other process has written to the store since it was built (the
 * server's own enrolments and revocations build a new one). After the
 * CLI wrote (an enrolment, a revocation), the writer builds a new one and,
 * until it is there, tokens are looked up in the store: a revocation
 * takes effect on the next request either way. */
static bool authenticate(struct server *srv, struct http_request *req)
{
	const struct auth_entry *e;
	if (!req->token[0] || req->token_too_long)
		return false;
	size_t len = strlen(req->token);
	if (srv->tokens && auth_cache_stamp(srv->tokens) == store_others_writes(srv->store)) {
		if (auth_cache_check(srv->tokens, req->token, len, &e) < 0)
			return false;
		req->device = e->id;
		req->role = e->role;
		memcpy(req->county, e->county, sizeof(req->county));
		req->scope = e->scope;
		return true;
	}
	server_tokens_refresh(srv);
	struct store_txn *t;
	struct arena *a;
	store_device_t *d;
	bool ok = false;
	if (!(a = arena_new()))
		return false;
	if (store_begin(srv->store, false, &t) == 0) {
		if (auth_check(t, a, req->token, len, &d) == 0) {
			req->device = d->id;
			req->role = d->role;
			snprintf(req->county, sizeof(req->county), "%s", d->county);
			req->scope = scope_of_device(d);
			ok = true;
		}
		store_abort(t);
	}
	arena_free(a);
	return ok;
}

static void routes_on_headers(struct http_conn *c, struct http_request *req)
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
			http_error(c, 403, "role_not_allowed",
				   req->role == ROLE_METRICS ? "a metrics token may only read /metrics"
							     : "this token's role may not use this endpoint");
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
	struct task task;       /* task.job.batch: the decoded batch */
	const uint8_t *body;    /* the connection's; it is not parsed meanwhile */
	size_t len;
	enum codec_enc enc;
	int r;
	struct form_verdict verdict;
};

static void push_decode(struct task *t)
{
	struct push_work *p = (struct push_work *)t;
	p->r = sync_decode(t->srv->forms, &t->srv->cfg.sync, p->body, p->len, p->enc, sh_now_ms(),
			   &t->job.batch, &p->verdict);
}

static void push_free(struct push_work *p)
{
	sync_batch_free(p->task.job.batch);
	task_release(&p->task);
	free(p);
}

static void push_committed(struct task *t)
{
	struct push_work *p = (struct push_work *)t;
	struct server *srv = t->srv;
	struct http_conn *c = t->c;
	struct writer_job *job = &t->job;
	int r = job->result;
	if (r == 0) {
		srv->stats.batches++;
		srv->stats.batches_replayed += job->res.replay;
		srv->stats.changes_applied += job->res.replay ? 0 : job->res.applied;
		srv->stats.changes_duplicate += job->res.replay ? sync_batch_changes(job->batch)
								: job->res.duplicate;
		srv->stats.changes_rejected += job->res.replay ? 0 : job->res.rejected;
		http_respond(c, 200, "application/x-protobuf", job->res.response,
			     job->res.response_len);
	} else if (r == -EEXIST) {
		http_error(c, task_status(r, 500), "batch_seq_reused",
			   "this batch number was used before with other content; nothing was stored");
	} else if (r == -ENOENT) {
		http_error(c, 401, "unauthorized", "a valid bearer token is required");
	} else if (r == -ENOSPC) {
		http_error(c, task_status(r, 500), "storage_full",
			   "the server's store is full; nothing was stored, try again later");
	} else {
		http_error(c, 500, "internal", "the batch could not be stored; nothing was stored");
	}
	push_free(p);
}

static void push_decoded(struct task *t)
{
	struct push_work *p = (struct push_work *)t;
	struct http_conn *c = t->c;
	struct http_request *req = http_conn_request(c);
	if (p->r < 0) {
		http_error(c, task_status(p->r, 400), p->verdict.code[0] ? p->verdict.code : "bad_batch",
			   p->verdict.reason[0] ? p->verdict.reason : sh_strerror(p->r));
		push_free(p);
		return;
	}
	if (sync_batch_device(t->job.batch) != req->device) {
		http_error(c, 403, "device_mismatch",
			   "the batch names another device than the token's");
		push_free(p);
		return;
	}
	req->changes = (uint32_t)sync_batch_changes(t->job.batch);
	t->job.kind = WJOB_PUSH;
	task_submit(t, push_committed);
}

static void handle_push(struct http_conn *c, struct server *srv, struct http_request *req)
{
	struct push_work *p = calloc(1, sizeof(*p));
	(void)srv;
	if (!p) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	p->body = req->body;
	p->len = req->body_len;
	p->enc = req->enc;
	task_hold(&p->task, c, true);
	/* Inflating and decoding run on the thread pool, off the loop. */
	if (task_queue(&p->task, push_decode, push_decoded) < 0) {
		http_error(c, 503, "busy", "cannot queue the batch");
		push_free(p);
	}
}

/* ---- pull ---- */

struct pull_work {
	struct task task;
	uint64_t device, cursor;
	uint32_t limit;
	enum codec_enc enc;        /* what the client accepts */
	int r;
	struct sync_pull_info info;
	struct buf out, packed;
};

static void pull_read(struct task *tk)
{
	struct pull_work *p = (struct pull_work *)tk;
	struct store_txn *t;
	p->r = store_begin(tk->srv->store, false, &t);
	if (p->r < 0)
		return;
	p->r = sync_pull(t, p->device, p->cursor, p->limit, SYNC_PULL_PAGE_BYTES, &p->out, &p->info);
	store_abort(t);
	/* Compressed here, not on the event loop: a full page (1,000
	 * changes, ~1 MB) takes tens of ms that every other phone would wait
	 * through. */
	if (p->r == 0)
		http_compress(p->enc, 6, p->out.data, p->out.len, &p->packed);
}

static void pull_done(struct task *t)
{
	struct pull_work *p = (struct pull_work *)t;
	if (p->r < 0) {
		http_error(t->c, 500, "internal", "the feed could not be read");
	} else {
		if (p->packed.data)
			http_respond_encoded(t->c, 200, "application/x-protobuf", p->enc,
					     p->packed.data, p->packed.len);
		else
			http_respond_encoded(t->c, 200, "application/x-protobuf", CODEC_IDENTITY,
					     p->out.data, p->out.len);
		/* Note the pull (time, and the cursor the device says it has):
		 * nobody waits for that commit. */
		struct writer_job *j = calloc(1, sizeof(*j));
		if (j) {
			j->kind = WJOB_NOTE_PULL;
			j->device = p->device;
			j->cursor = p->cursor;
			writer_submit(t->srv->writer, j);
		}
	}
	buf_free(&p->out);
	buf_free(&p->packed);
	task_release(t);
	free(p);
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
	p->device = req->device;
	p->cursor = cursor;
	p->limit = (uint32_t)SH_MIN(limit, (uint64_t)srv->cfg.pull_limit);
	p->enc = http_accepted_encoding(c);
	task_hold(&p->task, c, false);
	if (task_queue(&p->task, pull_read, pull_done) < 0) {
		p->r = -EAGAIN;
		pull_done(&p->task);
	}
}

/* ---- at once ---- */

static void handle_healthz(struct http_conn *c, struct server *srv, struct http_request *req)
{
	static const char ok[] = "{\"status\":\"ok\"}\n";
	(void)srv;
	(void)req;
	http_respond(c, 200, "application/json", (const uint8_t *)ok, sizeof(ok) - 1);
}

static void handle_forms(struct http_conn *c, struct server *srv, struct http_request *req)
{
	(void)req;
	http_respond(c, 200, "application/x-protobuf", srv->forms_packed, srv->forms_packed_len);
}

static void routes_on_request(struct http_conn *c, struct http_request *req)
{
	struct server *srv = http_conn_server(c);
	const struct route *rt = NULL;
	for (size_t i = 0; i < SH_ARRAY_SIZE(routes); i++)
		if ((int)routes[i].id == req->route_id)
			rt = &routes[i];
	if (!rt) {
		http_error(c, 404, "not_found", "no such endpoint");
		return;
	}
	rt->handler(c, srv, req);
}

/* Requests being decoded count as much as those waiting for the writer:
 * both hold their decoded batch in memory; so do those about to be read.
 * Requests other than pushes have places of their own: pushes waiting
 * for the writer do not hold back /healthz, pulls or the office. */
static bool routes_overloaded(struct server *srv, bool push, unsigned admitted)
{
	if (!push)
		return srv->busy_others >= srv->cfg.max_queue;
	return srv->busy + files_busy() + admitted >= srv->cfg.max_queue ||
	       writer_backlog(srv->writer) >= srv->cfg.max_queue;
}

const struct http_handlers routes_handlers = {
	.on_headers = routes_on_headers,
	.on_request = routes_on_request,
	.overloaded = routes_overloaded,
};
