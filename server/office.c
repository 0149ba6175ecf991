#include "office.h"
#include "office_int.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "audit.h"
#include "auth.h"
#include "common.h"
#include "http.h"
#include "render.h"
#include "resolve.h"
#include "routes.h"
#include "server.h"
#include "status.h"
#include "uuid.h"

unsigned long office_busy;

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

static void scope_of(const struct http_request *req, const char **out, size_t *n)
{
	*n = req->n_scope;
	for (size_t i = 0; i < req->n_scope; i++)
		out[i] = req->scope[i];
}

bool office__in_scope(const struct http_request *req, const char *county)
{
	if (!req->n_scope)
		return true;
	for (size_t i = 0; i < req->n_scope; i++)
		if (county && !strcmp(req->scope[i], county))
			return true;
	return false;
}

void office__actor_of(const struct http_request *req, char buf[64])
{
	char hex[17];
	sh_device_fmt(req->device, hex);
	snprintf(buf, 64, "device:%s", hex);
}

/* ---- read-only JSON work on the thread pool ---- */

struct job {
	uv_work_t work;
	struct http_conn *c;
	struct server *srv;
	struct http_request req;   /* a copy: scope, device, query */
	char query[512];
	void (*run)(struct job *j);
	json_t *out;
	int status;
	const char *code;
	char msg[200];
};

static void job_work(uv_work_t *w)
{
	struct job *j = w->data;
	j->run(j);
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	(void)status;
	if (j->out)
		office__respond_json(j->c, j->status ? j->status : 200, j->out);
	else
		http_error(j->c, j->status ? j->status : 500, j->code ? j->code : "internal",
			   j->msg[0] ? j->msg : "the request failed");
	json_decref(j->out);
	http_conn_unref(j->c);
	free(j);
	office_busy--;
}

static void start_job(struct http_conn *c, struct server *srv, struct http_request *req,
		      void (*run)(struct job *))
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	j->c = c;
	j->srv = srv;
	j->req = *req;
	snprintf(j->query, sizeof(j->query), "%s", req->query);
	j->req.query = j->query;
	j->req.path = NULL;
	j->req.body = NULL;
	j->run = run;
	j->work.data = j;
	http_conn_ref(c);
	office_busy++;
	if (uv_queue_work(srv->loop, &j->work, job_work, job_done) < 0) {
		j->status = 503;
		j->code = "busy";
		job_done(&j->work, 0);
	}
}

static void run_status(struct job *j)
{
	const char *scope[SERVER_MAX_SCOPE];
	char sd[32];
	struct status_opts o = {.counties = scope, .silent_days = 7, .now_ms = sh_now_ms()};
	scope_of(&j->req, scope, &o.n_counties);
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
	if (status_collect(j->srv->store, j->srv->forms, &o, &j->out) < 0)
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
	if (!a || !arr || (r = store_begin(j->srv->store, false, &t)) < 0)
		goto out;
	/* Open conflicts are few; the list is capped all the same. */
	while (json_array_size(arr) < 5000 && (r = store_conflict_next(t, a, &seq, &rec)) == 1) {
		const struct form *f = form_registry_find(j->srv->forms, rec->form_id, rec->form_version);
		char county[4] = "";
		render_record_county(rec, f, county);
		if (office__in_scope(&j->req, county)) {
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
	int r = status_history(j->srv->store, j->srv->forms, id, &j->out, counties, sizeof(counties));
	/* in scope when any county the record has been in is */
	bool seen = r == 0 && !counties[0] && office__in_scope(&j->req, "");
	for (char *p = counties; r == 0 && *p && !seen; p += p[3] ? 4 : 3) {
		char one[4] = {p[0], p[1], p[2], 0};
		seen = office__in_scope(&j->req, one);
	}
	if (r == 0 && !seen) {
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

/* ---- actions through the writer ---- */

struct action {
	struct writer_job job;
	struct http_conn *c;
	struct server *srv;
	struct http_request req;
	char actor[64];
	json_t *body;              /* the request's JSON */
	json_t *details;           /* for the audit log */
	json_t *reply;             /* set by the action */
	int status;                /* an HTTP error instead of the reply */
	const char *code;
	char msg[400];
	int (*act)(struct store_txn *t, struct action *a);
	/* per action */
	struct resolve_req rq;
	uint8_t rid[16];
	uint8_t inst[16];      /* resolve: the instance, when one is named */
	struct buf value;
	uint64_t device;
	struct auth_enrol enrol;
	char county[200];
};

static void action_done(struct writer_job *job)
{
	struct action *a = job->ud;
	if (job->result == 0 && a->reply)
		office__respond_json(a->c, 200, a->reply);
	else if (a->status)
		http_error(a->c, a->status, a->code, a->msg);
	else if (job->result == -ENOSPC)
		http_error(a->c, 507, "storage_full", "the store is full");
	else
		http_error(a->c, 500, "internal", sh_strerror(job->result));
	json_decref(a->reply);
	json_decref(a->body);
	json_decref(a->details);
	buf_free(&a->value);
	http_conn_unref(a->c);
	free(a);
	office_busy--;
}

#define FAIL(st, c_, ...)                                              \
	do {                                                           \
		a->status = st;                                        \
		a->code = c_;                                          \
		snprintf(a->msg, sizeof(a->msg), __VA_ARGS__);         \
		return -ECANCELED;                                     \
	} while (0)

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
	a->c = c;
	a->srv = srv;
	a->req = *req;
	a->req.body = NULL;
	a->body = body;
	office__actor_of(req, a->actor);
	a->job.kind = WJOB_CALL;
	a->job.fn = action_fn;
	a->job.fn_ud = a;
	a->job.done = action_done;
	a->job.ud = a;
	a->details = json_object();
	a->act = fn;
	http_conn_ref(c);
	office_busy++;
	writer_submit(srv->writer, &a->job);
}

static int action_fn(struct store_txn *t, void *ud)
{
	struct action *a = ud;
	/* store_write may run this again after growing the map. */
	json_decref(a->reply);
	a->reply = NULL;
	a->status = 0;
	int r = a->act(t, a);
	if (r == -ECANCELED)
		return 0; /* refused: nothing written, the transaction goes on */
	return r;
}

static int record_county_in(struct store_txn *t, struct action *a, const uint8_t id[16])
{
	struct arena *ar = arena_new();
	merge_rec_t *rec;
	char county[4] = "";
	if (!ar)
		return -ENOMEM;
	int r = store_record_get(t, ar, id, &rec);
	if (r == 0) {
		const struct form *f = form_registry_find(a->srv->forms, rec->form_id, rec->form_version);
		render_record_county(rec, f, county);
		if (!office__in_scope(&a->req, county))
			r = -ENOENT;
	}
	arena_free(ar);
	return r;
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static int do_resolve(struct store_txn *t, struct action *a)
{
	const char *rid = jstr(a->body, "record_id");
	json_t *field = json_object_get(a->body, "field");
	if (!rid || uuid_parse(rid, a->rid) < 0)
		FAIL(400, "bad_request", "record_id must be a UUID");
	int r = record_county_in(t, a, a->rid);
	if (r == -ENOENT)
		FAIL(404, "no_such_record", "no such record");
	if (r < 0)
		return r;
	a->rq.record_id = a->rid;
	json_object_set_new(a->details, "record_id", json_string(rid));
	const char *inst = jstr(a->body, "instance");
	if (inst && uuid_parse(inst, a->inst) < 0)
		FAIL(400, "bad_request", "instance must be a UUID (a repeat-group instance's id)");
	if (inst) {
		a->rq.instance = a->inst;
		json_object_set_new(a->details, "instance", json_string(inst));
	}
	json_t *take = json_object_get(a->body, "take"), *val = json_object_get(a->body, "value");
	json_t *del = json_object_get(a->body, "deleted");
	if (json_is_boolean(del)) {
		a->rq.how = RESOLVE_DELETED;
		a->rq.deleted = json_is_true(del);
		json_object_set_new(a->details, "deleted", json_boolean(a->rq.deleted));
	} else {
		/* the field, by name or number, in the record's form */
		struct arena *ar = arena_new();
		merge_rec_t *rec;
		const struct form_field *fd = NULL;
		if (!ar)
			return -ENOMEM;
		if (store_record_get(t, ar, a->rid, &rec) == 0) {
			const struct form *f = form_registry_find(a->srv->forms, rec->form_id,
								  rec->form_version);
			for (size_t i = 0; f && i < f->n_fields && !fd; i++)
				if ((json_is_string(field) && !strcmp(f->fields[i].name, json_string_value(field))) ||
				    (json_is_integer(field) && f->fields[i].number == json_integer_value(field)))
					fd = &f->fields[i];
		}
		arena_free(ar);
		if (!fd)
			FAIL(400, "unknown_field", "field must name a field of the record's form");
		a->rq.field = fd->number;
		json_object_set_new(a->details, "field", json_string(fd->name));
		if (json_is_string(take)) {
			a->rq.how = RESOLVE_TAKE;
			if (sh_device_parse(json_string_value(take), &a->rq.take_device) < 0)
				FAIL(400, "bad_request", "take must be a device id (16 hex digits)");
			json_object_set_new(a->details, "take", json_string(json_string_value(take)));
		} else if (val) {
			char err[200];
			a->rq.how = RESOLVE_VALUE;
			buf_reset(&a->value);
			if (render_value_encode(fd, val, &a->value, err, sizeof(err)) < 0)
				FAIL(400, "wrong_type", "%s", err);
			a->rq.value = a->value.data;
			a->rq.value_len = a->value.len;
			json_object_set_new(a->details, "how", json_string("value"));
		} else {
			FAIL(400, "bad_request", "give take (a device id), value, or deleted");
		}
	}
	struct form_verdict v = {{0}};
	uint64_t log_seq;
	r = resolve_apply(t, a->srv->forms, a->req.device, &a->rq, sh_now_ms(), &v, &log_seq);
	if (r == -EINVAL)
		FAIL(v.code[0] && !strcmp(v.code, "no_conflict") ? 409 : 400, "cannot_resolve", "%s: %s",
		     v.code, v.reason);
	if (r == -ENOENT)
		FAIL(404, "no_such_record", "no such record");
	if (r < 0)
		return r;
	json_object_set_new(a->details, "log_seq", json_integer((json_int_t)log_seq));
	json_incref(a->details);
	if ((r = audit_record_txn(t, a->actor, "resolve", a->details)) < 0)
		return r;
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
	struct arena *ar;
	store_device_t *d;
	if (!rid || uuid_parse(rid, a->rid) < 0 || !dev || sh_device_parse(dev, &a->device) < 0)
		FAIL(400, "bad_request", "record_id (a UUID) and device (16 hex digits) are required");
	int r = record_county_in(t, a, a->rid);
	if (r == -ENOENT)
		FAIL(404, "no_such_record", "no such record");
	if (r < 0)
		return r;
	if (!(ar = arena_new()))
		return -ENOMEM;
	r = store_device_get(t, ar, a->device, &d);
	bool ok = r == 0 && !d->revoked && d->role == ROLE_DEVICE && office__in_scope(&a->req, d->county);
	arena_free(ar);
	if (r < 0 && r != -ENOENT)
		return r;
	if (!ok)
		FAIL(404, "no_such_device", "no such device in your counties");
	if (!(ar = arena_new()))
		return -ENOMEM;
	r = store_assign(t, ar, a->rid, a->device);
	arena_free(ar);
	if (r < 0)
		return r;
	json_object_set_new(a->details, "record_id", json_string(rid));
	json_object_set_new(a->details, "device", json_string(dev));
	json_incref(a->details);
	if ((r = audit_record_txn(t, a->actor, "assign", a->details)) < 0)
		return r;
	a->reply = json_pack("{s:b}", "assigned", 1);
	return 0;
}

void office_assign(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_action(c, srv, req, do_assign);
}

static int do_enrol(struct store_txn *t, struct action *a)
{
	const char *name = jstr(a->body, "name"), *county = jstr(a->body, "county");
	const char *role = jstr(a->body, "role");
	uint32_t rl = ROLE_DEVICE;
	if (role && store_role_parse(role, &rl) < 0)
		FAIL(400, "bad_request", "role is device, coordinator or admin");
	struct auth_enrol e = {name, county, rl};
	uint64_t id;
	char token[AUTH_TOKEN_LEN + 1], err[200];
	int r = auth_enrol(t, &e, sh_now_ms(), &id, token, err, sizeof(err));
	if (r == -EINVAL)
		FAIL(400, "bad_request", "%s", err);
	if (r < 0)
		return r;
	char hex[17];
	sh_device_fmt(id, hex);
	json_object_set_new(a->details, "device", json_string(hex));
	json_object_set_new(a->details, "name", json_string(name));
	json_object_set_new(a->details, "role", json_string(store_role_name(rl)));
	json_object_set_new(a->details, "county", json_string(county ? county : ""));
	json_incref(a->details);
	if ((r = audit_record_txn(t, a->actor, "enrol", a->details)) < 0)
		return r;
	/* The token is shown once, here; only its hash is stored. */
	a->reply = json_pack("{s:s,s:s}", "id", hex, "token", token);
	return 0;
}

void office_enrol(struct http_conn *c, struct server *srv, struct http_request *req)
{
	start_action(c, srv, req, do_enrol);
}

static int do_revoke(struct store_txn *t, struct action *a)
{
	const char *dev = jstr(a->body, "id");
	if (!dev || sh_device_parse(dev, &a->device) < 0)
		FAIL(400, "bad_request", "id (16 hex digits) is required");
	int r = auth_revoke(t, a->device, sh_now_ms());
	if (r == -ENOENT)
		FAIL(404, "no_such_device", "no such device");
	if (r < 0)
		return r;
	json_object_set_new(a->details, "device", json_string(dev));
	json_incref(a->details);
	if ((r = audit_record_txn(t, a->actor, "revoke", a->details)) < 0)
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
	if (!a || !arr || (r = store_begin(j->srv->store, false, &t)) < 0)
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

/* ---- metrics ---- */

/* The process metrics every Prometheus client library exports, from
 * /proc (Linux). A figure that cannot be read is left out. */
static void metrics__process(struct buf *b)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		buf_printf(b,
			   "# HELP process_cpu_seconds_total User and system CPU time spent.\n"
			   "# TYPE process_cpu_seconds_total counter\n"
			   "process_cpu_seconds_total %.6f\n",
			   (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
				   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
	unsigned long long vsize = 0, rss = 0, start = 0, btime = 0;
	char line[1024];
	FILE *f = fopen("/proc/self/stat", "r");
	if (f) {
		/* after the command name, which may hold spaces and parentheses */
		char *p = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d"
				" %*d %*d %llu %llu %llu", &start, &vsize, &rss) == 3)
			buf_printf(b,
				   "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
				   "# TYPE process_resident_memory_bytes gauge\n"
				   "process_resident_memory_bytes %llu\n"
				   "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
				   "# TYPE process_virtual_memory_bytes gauge\n"
				   "process_virtual_memory_bytes %llu\n",
				   rss * (unsigned long long)page, vsize);
		else
			start = 0;
		fclose(f);
	}
	if (start && ticks > 0 && (f = fopen("/proc/stat", "r"))) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "btime %llu", &btime) == 1)
				break;
		fclose(f);
		if (btime)
			buf_printf(b,
				   "# HELP process_start_time_seconds Start time of the process since the epoch.\n"
				   "# TYPE process_start_time_seconds gauge\n"
				   "process_start_time_seconds %.2f\n",
				   (double)btime + (double)start / (double)ticks);
	}
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		unsigned n = 0;
		const struct dirent *e;
		while ((e = readdir(d)))
			n += e->d_name[0] != '.';
		closedir(d);
		buf_printf(b,
			   "# HELP process_open_fds Number of open file descriptors.\n"
			   "# TYPE process_open_fds gauge\n"
			   "process_open_fds %u\n",
			   n - 1); /* the directory's own */
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		buf_printf(b,
			   "# HELP process_max_fds Maximum number of open file descriptors.\n"
			   "# TYPE process_max_fds gauge\n"
			   "process_max_fds %llu\n",
			   (unsigned long long)rl.rlim_cur);
}

void office_metrics(struct http_conn *c, struct server *srv, struct http_request *req)
{
	struct buf b = {0};
	struct writer_stats ws;
	struct store_info info = {0};
	struct store_txn *t;
	(void)req;
	writer_get_stats(srv->writer, &ws);
	if (store_begin(srv->store, false, &t) == 0) {
		store_info(t, &info);
		store_abort(t);
	}
	const struct server_stats *st = &srv->stats;
	buf_puts(&b, "# HELP shahidi_requests_total HTTP requests by route and status class.\n"
		     "# TYPE shahidi_requests_total counter\n");
	static const char *const cls[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
	for (int r = 0; r < R__COUNT; r++)
		for (int k = 0; k < 6; k++)
			if (st->requests[r][k])
				buf_printf(&b, "shahidi_requests_total{route=\"%s\",status=\"%s\"} %" PRIu64 "\n",
					   routes_name(r), cls[k], st->requests[r][k]);
	buf_printf(&b,
		   "# HELP shahidi_batches_total Push batches answered, replays included.\n"
		   "# TYPE shahidi_batches_total counter\n"
		   "shahidi_batches_total %" PRIu64 "\n"
		   "# HELP shahidi_batches_replayed_total Push batches sent again, answered from the store.\n"
		   "# TYPE shahidi_batches_replayed_total counter\n"
		   "shahidi_batches_replayed_total %" PRIu64 "\n"
		   "# HELP shahidi_changes_total Changes by outcome.\n"
		   "# TYPE shahidi_changes_total counter\n"
		   "shahidi_changes_total{outcome=\"applied\"} %" PRIu64 "\n"
		   "shahidi_changes_total{outcome=\"duplicate\"} %" PRIu64 "\n"
		   "shahidi_changes_total{outcome=\"rejected\"} %" PRIu64 "\n"
		   "# HELP shahidi_open_conflicts Records with open conflicts.\n"
		   "# TYPE shahidi_open_conflicts gauge\n"
		   "shahidi_open_conflicts %" PRIu64 "\n"
		   "# HELP shahidi_records Records in the store, deleted ones included.\n"
		   "# TYPE shahidi_records gauge\n"
		   "shahidi_records %" PRIu64 "\n"
		   "# HELP shahidi_log_entries Entries in the change log.\n"
		   "# TYPE shahidi_log_entries gauge\n"
		   "shahidi_log_entries %" PRIu64 "\n"
		   "# HELP shahidi_connections_open Open client connections.\n"
		   "# TYPE shahidi_connections_open gauge\n"
		   "shahidi_connections_open %u\n"
		   "# HELP shahidi_connections_refused_total Connections refused over --max-conns.\n"
		   "# TYPE shahidi_connections_refused_total counter\n"
		   "shahidi_connections_refused_total %" PRIu64 "\n"
		   "# HELP shahidi_reads_paused_total Requests left unread while overloaded.\n"
		   "# TYPE shahidi_reads_paused_total counter\n"
		   "shahidi_reads_paused_total %" PRIu64 "\n"
		   "# HELP shahidi_auth_failures_total Requests refused for a missing or wrong token.\n"
		   "# TYPE shahidi_auth_failures_total counter\n"
		   "shahidi_auth_failures_total %" PRIu64 "\n"
		   "# HELP shahidi_auth_throttled_total Requests refused with 429 after too many bad tokens.\n"
		   "# TYPE shahidi_auth_throttled_total counter\n"
		   "shahidi_auth_throttled_total %" PRIu64 "\n"
		   "# HELP shahidi_map_size_bytes Size of the store's memory map (grows up to --max-map).\n"
		   "# TYPE shahidi_map_size_bytes gauge\n"
		   "shahidi_map_size_bytes %" PRIu64 "\n"
		   "# HELP shahidi_map_used_bytes Bytes of the store's map in use.\n"
		   "# TYPE shahidi_map_used_bytes gauge\n"
		   "shahidi_map_used_bytes %" PRIu64 "\n"
		   "# HELP shahidi_writer_queue Batches waiting for the writer.\n"
		   "# TYPE shahidi_writer_queue gauge\n"
		   "shahidi_writer_queue %" PRIu64 "\n",
		   st->batches, st->batches_replayed, st->changes_applied, st->changes_duplicate,
		   st->changes_rejected, info.open_conflicts, info.records, info.log_entries,
		   http_conns(srv), st->conns_refused, st->reads_paused, st->auth_failures, st->auth_throttled,
		   info.map_size, info.map_used,
		   ws.queued);
	static const char *const le[] = {"0.001", "0.002", "0.005", "0.01", "0.02", "0.05",
					 "0.1",	  "0.2",   "0.5",   "1",    "+Inf"};
	buf_puts(&b, "# HELP shahidi_commit_seconds Durable commit latency (group commits).\n"
		     "# TYPE shahidi_commit_seconds histogram\n");
	uint64_t cum = 0;
	for (int i = 0; i < 11; i++) {
		cum += ws.latency_buckets[i];
		buf_printf(&b, "shahidi_commit_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", le[i], cum);
	}
	buf_printf(&b,
		   "shahidi_commit_seconds_sum %.6f\nshahidi_commit_seconds_count %" PRIu64 "\n"
		   "# HELP shahidi_commit_apply_seconds_total Of the commits' time, applying the "
		   "batches (the rest is writing and syncing the pages).\n"
		   "# TYPE shahidi_commit_apply_seconds_total counter\n"
		   "shahidi_commit_apply_seconds_total %.6f\n"
		   "# HELP shahidi_group_commit_jobs Jobs per group commit.\n"
		   "# TYPE shahidi_group_commit_jobs summary\n"
		   "shahidi_group_commit_jobs_sum %" PRIu64 "\nshahidi_group_commit_jobs_count %" PRIu64 "\n"
		   "# HELP shahidi_group_commit_jobs_max Most jobs in one group commit since start.\n"
		   "# TYPE shahidi_group_commit_jobs_max gauge\n"
		   "shahidi_group_commit_jobs_max %" PRIu64 "\n"
		   "# HELP shahidi_build_info The running server's version.\n"
		   "# TYPE shahidi_build_info gauge\n"
		   "shahidi_build_info{version=\"%s\"} 1\n",
		   ws.latency_sum_s, ws.commits, ws.apply_sum_s, ws.group_sum, ws.commits,
		   ws.max_group, SHAHIDI_VERSION);
	metrics__process(&b);
	http_respond(c, 200, "text/plain; version=0.0.4", b.data, b.len);
	buf_free(&b);
}
