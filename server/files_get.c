/* files_get.c: downloads of complete files (GET /v1/files/ID, Range),
 * read from disk a chunk at a time (on the thread pool) as the client
 * takes them: one 64 KiB chunk held per download. Not sendfile: the bytes
 * go through libuv's write queue, which keeps the connection's timeouts
 * and backpressure as they are for every other response; measured, that
 * costs under 1 CPU second per GB (README, Attachments). */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "audit.h"
#include "auth.h"
#include "common.h"
#include "files_int.h"
#include "form.h"
#include "http.h"
#include "render.h"
#include "server.h"
#include "upload.h"

struct dl {
	struct server *srv;
	struct http_conn *c;
	int fd;
	uint64_t off, end;          /* what is left to send: [off, end) */
	uv_fs_t read;               /* reads run on the thread pool, off the loop */
	uint8_t buf[FILES_CHUNK];
};

static void dl_free(struct dl *d)
{
	struct server *srv = d->srv;
	if (d->fd >= 0)
		close(d->fd);
	http_conn_unref(d->c);
	free(d);
	files__busy--;
	http_kick(srv);
}

static void dl_pump(void *ud);

static void dl_read(uv_fs_t *r)
{
	struct dl *d = r->data;
	ssize_t n = r->result;
	uv_fs_req_cleanup(r);
	if (http_conn_gone(d->c)) {
		dl_free(d);
		return;
	}
	/* http_stream_write copies the chunk: buf is free for the next read
	 * once it has left (dl_pump, called back when drained) */
	if (n <= 0 || http_stream_write(d->c, d->buf, (size_t)n, dl_pump, d) < 0) {
		http_stream_end(d->c); /* short: the client sees the body cut */
		dl_free(d);
		return;
	}
	d->off += (uint64_t)n;
}

/* The next chunk: read from disk, then written once the last has left. */
static void dl_pump(void *ud)
{
	struct dl *d = ud;
	if (http_conn_gone(d->c)) {
		dl_free(d);
		return;
	}
	if (d->off >= d->end) {
		http_stream_end(d->c);
		dl_free(d);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)d->buf,
				 (unsigned)SH_MIN(d->end - d->off, (uint64_t)FILES_CHUNK));
	d->read.data = d;
	if (uv_fs_read(d->srv->loop, &d->read, d->fd, &b, 1, (int64_t)d->off, dl_read) < 0) {
		http_stream_end(d->c);
		dl_free(d);
	}
}

/* Whether req may download a file through one reference to it. */
enum see {
	SEE_NO,        /* 404: not a record this token may see */
	SEE_SENSITIVE, /* 403: the record is in scope, the field is sensitive */
	SEE_OK,
};

/* The export's rules, applied to one file: a phone that wrote the record
 * or was assigned it sees all of it (it holds the record, sensitive fields
 * included); an office token only records of its counties, and a file of a
 * sensitive field (or of a field its form does not list) only if it is an
 * admin's, as only admins export sensitive fields. An erased record names
 * no file. */
static enum see may_see(struct store_txn *t, struct server *srv, const struct http_request *req,
			const struct upload_ref *ref)
{
	struct arena *a = arena_new();
	merge_rec_t *rec;
	enum see ok = SEE_NO;
	if (!a)
		return SEE_NO;
	if (store_record_get(t, a, ref->record_id, &rec) == 0 && !rec->erased_ms) {
		if (req->role == ROLE_DEVICE) {
			for (size_t i = 0; i < rec->n_writers && !ok; i++)
				ok = rec->writers[i] == req->device ? SEE_OK : SEE_NO;
			for (size_t i = 0; i < rec->n_assigned && !ok; i++)
				ok = rec->assigned[i] == req->device ? SEE_OK : SEE_NO;
		} else {
			const struct form *f =
				form_registry_find(srv->forms, rec->form_id, rec->form_version);
			const struct form_field *fd = f ? form_field(f, ref->field) : NULL;
			if (!scope_has_record(&req->scope, rec, f, NULL))
				ok = SEE_NO;
			else if ((!fd || fd->sensitive) && !req->scope.sensitive)
				ok = SEE_SENSITIVE;
			else
				ok = SEE_OK;
		}
	}
	arena_free(a);
	return ok;
}

struct dl_find {
	struct store_txn *t;
	struct server *srv;
	const struct http_request *req;
	struct upload_ref ref;
	bool seen, stored, sensitive, any;
};

static int dl_each(const struct upload_ref *ref, void *ud)
{
	struct dl_find *f = ud;
	struct upload_file file;
	f->any = true;
	enum see v = may_see(f->t, f->srv, f->req, ref);
	if (v == SEE_SENSITIVE)
		f->sensitive = true;
	if (v != SEE_OK)
		return 0;
	f->seen = true;
	f->ref = *ref;
	f->stored = upload_file_get(f->t, ref->sha256, &file) == 0;
	return f->stored;
}

/* "bytes=a-b", "bytes=a-", "bytes=-n". 0 (whole file), 1 (a range), -EINVAL. */
static int parse_range(const char *s, uint64_t size, uint64_t *from, uint64_t *to)
{
	if (!*s || strncmp(s, "bytes=", 6) || strchr(s, ','))
		return 0;
	s += 6;
	char *e;
	if (*s == '-') {
		uint64_t n = strtoull(s + 1, &e, 10);
		if (*e || !n || !size)
			return -EINVAL;
		*from = n > size ? 0 : size - n;
		*to = size - 1;
		return 1;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	*from = strtoull(s, &e, 10);
	if (*e++ != '-')
		return -EINVAL;
	*to = *e ? strtoull(e, &e, 10) : size - 1;
	if (*e || *from >= size || *to < *from)
		return -EINVAL;
	if (*to >= size)
		*to = size - 1;
	return 1;
}

/* Streams the file that ref names (found and allowed). */
static void dl_begin(struct http_conn *c, struct server *srv, struct http_request *req,
		     const struct upload_ref *ref)
{
	char path[4096], line[128];
	files__file_path(srv, ref->sha256, path, sizeof(path));
	struct dl *d = calloc(1, sizeof(*d));
	struct stat st;
	if (!d || (d->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(d->fd, &st) < 0) {
		if (d && d->fd >= 0)
			close(d->fd);
		free(d);
		http_error(c, 500, "internal", "the file could not be opened");
		return;
	}
	uint64_t size = (uint64_t)st.st_size, from = 0, to = size ? size - 1 : 0;
	int rg = parse_range(req->tus.range, size, &from, &to);
	if (rg < 0) {
		close(d->fd);
		free(d);
		snprintf(line, sizeof(line), "Content-Range: bytes */%" PRIu64, size);
		http_add_header(c, line);
		http_error(c, 416, "bad_range", "the range is not within the file");
		return;
	}
	d->srv = srv;
	d->c = c;
	d->off = from;
	d->end = size ? to + 1 : 0;
	http_conn_ref(c);
	files__busy++;
	http_add_header(c, "Accept-Ranges: bytes");
	snprintf(line, sizeof(line), "ETag: \"%.64s\"", strrchr(path, '/') + 1);
	http_add_header(c, line);
	if (rg == 1) {
		snprintf(line, sizeof(line), "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64,
			 from, to, size);
		http_add_header(c, line);
	}
	const char *mt = ref->media_type[0] ? ref->media_type : "application/octet-stream";
	if (http_stream_start_length(c, rg == 1 ? 206 : 200, mt, d->end - d->off) < 0 ||
	    req->method == HTTP_HEAD) {
		http_stream_end(c);
		dl_free(d);
		return;
	}
	dl_pump(d);
}

/* An office token's download is in the audit log before its first byte,
 * as an export is: who, which record and field, how many bytes (not the
 * file's id or hash). */
struct dl_audit {
	struct writer_job job;
	struct server *srv;
	struct http_conn *c;
	struct upload_ref ref;
	char actor[32];
};

static int dl_audit_fn(struct store_txn *t, void *ud)
{
	struct dl_audit *a = ud;
	char rid[37];
	const uint8_t *b = a->ref.record_id;
	snprintf(rid, sizeof(rid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
	return audit_record_txn(t, a->actor, "download",
				json_pack("{s:s,s:I,s:I}", "record_id", rid, "field",
					  (json_int_t)a->ref.field, "bytes",
					  (json_int_t)a->ref.size));
}

static void dl_audited(struct writer_job *job)
{
	struct dl_audit *a = job->ud;
	struct server *srv = a->srv;
	if (http_conn_gone(a->c)) {
		/* nobody to send it to: the entry stays (asked for) */
	} else if (job->result < 0) {
		http_error(a->c, 500, "audit_failed",
			   "the download could not be written to the audit log; nothing was sent");
	} else {
		dl_begin(a->c, srv, http_conn_request(a->c), &a->ref);
	}
	http_conn_unref(a->c);
	free(a);
	files__busy--;
	http_kick(srv);
}

void files__download(struct http_conn *c, struct server *srv, struct http_request *req,
		     const uint8_t id[16])
{
	struct store_txn *t;
	struct dl_find f = {.srv = srv, .req = req};
	if (store_begin(srv->store, false, &t) < 0) {
		http_error(c, 500, "internal", "the store could not be read");
		return;
	}
	f.t = t;
	int r = upload_refs(t, id, dl_each, &f);
	store_abort(t);
	if (r == 0 && !f.seen && f.sensitive) {
		http_error(c, 403, "sensitive_field",
			   "the file belongs to a sensitive field of its record: only an admin and the "
			   "phones that hold the record download it");
		return;
	}
	if (r == 0 && !f.any && files__erased(srv, id)) {
		http_error(c, 410, "file_erased",
			   "the file was erased with its record at its data subject's request");
		return;
	}
	if (r < 0 || !f.seen) {
		http_error(c, 404, "not_found", "no such file, or not one this token may see");
		return;
	}
	if (!f.stored) {
		http_error(c, 404, "not_uploaded", "the file's bytes have not arrived yet");
		return;
	}
	if (req->role == ROLE_DEVICE || req->method == HTTP_HEAD) {
		dl_begin(c, srv, req, &f.ref); /* a phone holds the record: not an export */
		return;
	}
	struct dl_audit *a = calloc(1, sizeof(*a));
	if (!a) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	a->srv = srv;
	a->c = c;
	a->ref = f.ref;
	snprintf(a->actor, sizeof(a->actor), "device:%016" PRIx64, req->device);
	http_conn_ref(c);
	files__busy++;
	a->job.kind = WJOB_CALL;
	a->job.fn = dl_audit_fn;
	a->job.fn_ud = a;
	a->job.done = dl_audited;
	a->job.ud = a;
	writer_submit(srv->writer, &a->job);
}


/* ---- what is still to come ---- */

struct status_work {
	uv_work_t work;
	struct server *srv;
	struct http_conn *c;
	char scope[SCOPE_COUNTIES][4];
	size_t n_scope;             /* 0: every county */
	char *json;
	int r;
};

static void status_read(uv_work_t *w)
{
	struct status_work *s = w->data;
	const char *counties[SCOPE_COUNTIES];
	struct store_txn *t;
	json_t *o = NULL;
	for (size_t i = 0; i < s->n_scope; i++)
		counties[i] = s->scope[i];
	if ((s->r = store_begin(s->srv->store, false, &t)) < 0)
		return;
	s->r = upload_pending(t, s->srv->forms, counties, s->n_scope, &o);
	store_abort(t);
	if (s->r == 0) {
		s->json = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
		json_decref(o);
		if (!s->json)
			s->r = -ENOMEM;
	}
}

static void status_done(uv_work_t *w, int status)
{
	struct status_work *s = w->data;
	struct server *srv = s->srv;
	(void)status;
	if (s->r < 0)
		http_error(s->c, 500, "internal", "the upload status could not be read");
	else
		http_respond(s->c, 200, "application/json", (const uint8_t *)s->json,
			     strlen(s->json));
	free(s->json);
	http_conn_unref(s->c);
	free(s);
	files__busy--;
	http_kick(srv);
}

void files__status(struct http_conn *c, struct server *srv, struct http_request *req)
{
	struct status_work *s = calloc(1, sizeof(*s));
	if (!s) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	s->srv = srv;
	s->c = c;
	s->n_scope = scope_codes(&req->scope, s->scope, NULL);
	s->work.data = s;
	http_conn_ref(c);
	files__busy++;
	if (uv_queue_work(srv->loop, &s->work, status_read, status_done) < 0) {
		s->r = -EAGAIN;
		status_done(&s->work, 0);
	}
}
