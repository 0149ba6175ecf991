/* files: the tus 1.0.0 routes and downloads (see files.h). */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <llhttp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "common.h"
#include "files_int.h"
#include "http.h"
#include "server.h"
#include "upload.h"

#define PREFIX FILES_PREFIX

uint64_t files__busy;           /* async work in flight */

/* ---- paths ---- */

void files__partial_path(const struct server *srv, const uint8_t id[16], char *out, size_t n)
{
	char hex[33];
	sh_hex(id, 16, hex);
	snprintf(out, n, "%s/files/partial/%s", srv->cfg.data_dir, hex);
}

void files__file_path(const struct server *srv, const uint8_t sha[32], char *out, size_t n)
{
	char hex[65];
	sh_hex(sha, 32, hex);
	snprintf(out, n, "%s/files/sha256/%s", srv->cfg.data_dir, hex);
}

int files__ensure_dirs(const struct server *srv)
{
	char p[4096];
	const char *sub[] = {"files", "files/partial", "files/sha256"};
	for (size_t i = 0; i < SH_ARRAY_SIZE(sub); i++) {
		snprintf(p, sizeof(p), "%s/%s", srv->cfg.data_dir, sub[i]);
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -errno;
	}
	return 0;
}

int files__fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* ---- headers ---- */

void files__tus_header(struct http_conn *c)
{
	http_add_header(c, "Tus-Resumable: 1.0.0");
}

static void expires_header(struct http_conn *c, uint64_t ms)
{
	char line[80];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(line, sizeof(line), "Upload-Expires: %a, %d %b %Y %H:%M:%S GMT", &tm);
	http_add_header(c, line);
}

void files__offset_headers(struct http_conn *c, uint64_t offset, uint64_t length)
{
	char line[64];
	snprintf(line, sizeof(line), "Upload-Offset: %" PRIu64, offset);
	http_add_header(c, line);
	if (length != UINT64_MAX) {
		snprintf(line, sizeof(line), "Upload-Length: %" PRIu64, length);
		http_add_header(c, line);
	}
}

/* A decimal header: 0, -ENOENT (absent), -EINVAL. */
int files__header_u64(const char *s, uint64_t *ret)
{
	if (!*s)
		return -ENOENT;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*ret = v;
	return 0;
}

/* Upload-Metadata "key b64,key b64": the file id, as 32 hex digits. */
static int metadata_file_id(const char *md, uint8_t id[16])
{
	const char *p = md;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t kl = strcspn(p, " ,");
		const char *v = p + kl;
		size_t vl = 0;
		if (*v == ' ') {
			v++;
			vl = strcspn(v, ",");
		}
		if (kl == 6 && !strncmp(p, "fileid", 6) && vl) {
			char dec[64];
			size_t dl;
			if (sodium_base642bin((unsigned char *)dec, sizeof(dec) - 1, v, vl, NULL, &dl,
					      NULL, sodium_base64_VARIANT_ORIGINAL) < 0)
				return -EINVAL;
			dec[dl] = 0;
			return sh_unhex(dec, id, 16);
		}
		p = v + vl;
	}
	return -ENOENT;
}

/* ---- what a device may do ---- */

struct ref_find {
	uint64_t device;          /* 0: any reference */
	struct upload_ref ref;
	bool found;
};

static int ref_by_device(const struct upload_ref *ref, void *ud)
{
	struct ref_find *f = ud;
	if (f->device && ref->pusher != f->device)
		return 0;
	f->ref = *ref;
	f->found = true;
	return 1;
}

/* The reference a change of device made to file id (what it may upload).
 * 0, -ENOENT, or an error. */
int files__own_ref(struct server *srv, const uint8_t id[16], uint64_t device,
		   struct upload_ref *ret)
{
	struct store_txn *t;
	int r = store_begin(srv->store, false, &t);
	if (r < 0)
		return r;
	struct ref_find f = {.device = device};
	r = upload_refs(t, id, ref_by_device, &f);
	store_abort(t);
	if (r < 0)
		return r;
	if (!f.found)
		return -ENOENT;
	*ret = f.ref;
	return 0;
}

bool files__erased(struct server *srv, const uint8_t id[16])
{
	struct store_txn *t;
	uint64_t when;
	if (store_begin(srv->store, false, &t) < 0)
		return false;
	bool gone = upload_gone_get(t, id, &when) == 0;
	store_abort(t);
	return gone;
}

void files__erased_error(struct http_conn *c)
{
	http_error(c, 410, "file_erased",
		   "the file was erased with its record at its data subject's request");
}

int files__read_upload(struct server *srv, const uint8_t id[16], struct upload_state *u,
		       struct upload_file *done, const uint8_t *sha)
{
	struct store_txn *t;
	int r = store_begin(srv->store, false, &t);
	if (r < 0)
		return r;
	r = upload_get(t, id, u);
	if (r == -ENOENT && sha)
		r = upload_file_get(t, sha, done) == 0 ? 1 : -ENOENT;
	store_abort(t);
	return r;
}

/* ---- POST, HEAD, DELETE ---- */

struct simple_job {
	struct writer_job job;
	struct server *srv;
	struct http_conn *c;
	struct upload_state u;
	struct upload_file f;
	int kind; /* 'c' create, 'z' an empty file complete, 'd' delete */
	bool gone;
};

static int simple_commit(struct store_txn *t, void *ud)
{
	struct simple_job *j = ud;
	struct upload_file old;
	int r;
	j->gone = false;
	switch (j->kind) {
	case 'c':
		return upload_put(t, &j->u);
	case 'z':
		if ((r = upload_file_get(t, j->f.sha256, &old)) == -ENOENT)
			r = upload_file_put(t, &j->f);
		return r;
	default:
		if ((r = upload_get(t, j->u.file_id, &j->u)) == -ENOENT) {
			j->gone = true;
			return 0;
		}
		return r < 0 ? r : upload_del(t, j->u.file_id);
	}
}

static void simple_committed(struct writer_job *job)
{
	struct simple_job *j = job->ud;
	struct http_conn *c = j->c;
	char line[80], hex[33];
	if (job->result == -ENOSPC) {
		http_error(c, 507, "storage_full", "the server's store is full; nothing was stored");
	} else if (job->result < 0) {
		http_error(c, 500, "internal", "the upload's state could not be stored");
	} else if (j->kind == 'd') {
		if (j->gone) {
			http_error(c, 404, "unknown_upload", "no such upload");
		} else {
			char part[4096];
			files__partial_path(j->srv, j->u.file_id, part, sizeof(part));
			unlink(part);
			files__tus_header(c);
			http_respond(c, 204, NULL, NULL, 0);
		}
	} else {
		sh_hex(j->u.file_id, 16, hex);
		snprintf(line, sizeof(line), "Location: " PREFIX "%s", hex);
		http_add_header(c, line);
		files__tus_header(c);
		if (j->kind == 'c')
			expires_header(c, j->u.expires_ms);
		http_respond(c, 201, NULL, NULL, 0);
	}
	struct server *srv = j->srv;
	http_conn_unref(c);
	free(j);
	files__busy--;
	http_kick(srv);
}

static void simple_submit(struct http_conn *c, struct server *srv, struct simple_job *j)
{
	j->srv = srv;
	j->c = c;
	http_conn_ref(c);
	files__busy++;
	j->job.kind = WJOB_CALL;
	j->job.fn = simple_commit;
	j->job.fn_ud = j;
	j->job.done = simple_committed;
	j->job.ud = j;
	writer_submit(srv->writer, &j->job);
}

static void create(struct http_conn *c, struct server *srv, struct http_request *req)
{
	uint64_t len;
	uint8_t id[16];
	struct upload_ref ref;
	struct upload_state u;
	struct upload_file done;
	char line[80], hex[33];
	int r;
	if (files__header_u64(req->tus.length, &len) < 0) {
		http_error(c, 400, "bad_length", "Upload-Length is required, a decimal number");
		return;
	}
	if (len > srv->cfg.max_file) {
		snprintf(line, sizeof(line), "files are limited to %zu bytes", srv->cfg.max_file);
		http_error(c, 413, "file_too_large", line);
		return;
	}
	if (metadata_file_id(req->tus.metadata, id) < 0) {
		http_error(c, 400, "bad_metadata",
			   "Upload-Metadata must name the attachment: fileid <base64 of its 32 hex digits>");
		return;
	}
	if (req->role != ROLE_DEVICE) {
		http_error(c, 403, "role_not_allowed", "only phones upload attachments");
		return;
	}
	if ((r = files__own_ref(srv, id, req->device, &ref)) == -ENOENT && files__erased(srv, id)) {
		files__erased_error(c);
		return;
	}
	if (r < 0) {
		http_error(c, r == -ENOENT ? 403 : 500, r == -ENOENT ? "not_referenced" : "internal",
			   "no change this device pushed references that file id");
		return;
	}
	if (ref.size != len) {
		http_error(c, 400, "length_mismatch",
			   "Upload-Length is not the size the record's attachment names");
		return;
	}
	sh_hex(id, 16, hex);
	snprintf(line, sizeof(line), "Location: " PREFIX "%s", hex);
	r = files__read_upload(srv, id, &u, &done, ref.sha256);
	if ((r == 0 && u.expires_ms >= sh_now_ms()) || r == 1) {
		/* under way, or the same bytes are here already: go on from HEAD */
		http_add_header(c, line);
		files__tus_header(c);
		http_respond(c, 201, NULL, NULL, 0);
		return;
	}
	if (r < 0 && r != -ENOENT) {
		http_error(c, 500, "internal", "the store could not be read");
		return;
	}
	struct statvfs vfs;
	if (files__ensure_dirs(srv) < 0 ||
	    (statvfs(srv->cfg.data_dir, &vfs) == 0 &&
	     (uint64_t)vfs.f_bavail * vfs.f_frsize < len + ((uint64_t)64 << 20))) {
		http_error(c, 507, "storage_full", "the server's disk has no room for that file");
		return;
	}
	struct simple_job *j = calloc(1, sizeof(*j));
	if (!j) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	uint64_t now = sh_now_ms();
	memcpy(j->u.file_id, id, 16);
	memcpy(j->u.sha256, ref.sha256, 32);
	j->u.length = len;
	j->u.device = req->device;
	j->u.created_ms = now;
	j->u.expires_ms = now + srv->cfg.upload_expiry_ms;
	snprintf(j->u.media_type, sizeof(j->u.media_type), "%s", ref.media_type);
	j->kind = 'c';
	if (len == 0) {
		/* An empty file is complete at creation, if it is the one named. */
		uint8_t empty[32];
		char dest[4096];
		crypto_hash_sha256(empty, NULL, 0);
		files__file_path(srv, ref.sha256, dest, sizeof(dest));
		int fd = memcmp(empty, ref.sha256, 32)
				 ? -2 : open(dest, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			free(j);
			http_error(c, fd == -2 ? 460 : 500, fd == -2 ? "file_hash_mismatch" : "internal",
				   "the record's SHA-256 is not that of an empty file");
			return;
		}
		close(fd);
		snprintf(line, sizeof(line), "%s/files/sha256", srv->cfg.data_dir);
		files__fsync_dir(line);
		j->kind = 'z';
		memcpy(j->f.sha256, ref.sha256, 32);
		memcpy(j->f.file_id, id, 16);
		j->f.device = req->device;
		j->f.received_ms = now;
	}
	simple_submit(c, srv, j);
}

static void head(struct http_conn *c, struct server *srv, struct http_request *req,
		 const uint8_t id[16])
{
	struct upload_ref ref;
	struct upload_state u;
	struct upload_file done;
	int r = files__own_ref(srv, id, req->device, &ref);
	if (r == 0)
		r = files__read_upload(srv, id, &u, &done, ref.sha256);
	files__tus_header(c);
	if (r == 0 && u.expires_ms < sh_now_ms()) {
		http_error(c, 410, "upload_expired", "the upload expired; start again with POST");
	} else if (r == 0) {
		files__offset_headers(c, u.offset, u.length);
		expires_header(c, u.expires_ms);
		http_respond(c, 200, NULL, NULL, 0);
	} else if (r == 1) {
		files__offset_headers(c, done.size, done.size);
		http_respond(c, 200, NULL, NULL, 0);
	} else if (r == -ENOENT && files__erased(srv, id)) {
		files__erased_error(c);
	} else {
		http_error(c, 404, "unknown_upload", "no such upload for this device");
	}
}

static void terminate(struct http_conn *c, struct server *srv, struct http_request *req,
		      const uint8_t id[16])
{
	struct upload_ref ref;
	int r = files__own_ref(srv, id, req->device, &ref);
	if (r == -ENOENT && files__erased(srv, id)) {
		files__erased_error(c);
		return;
	}
	if (r < 0) {
		http_error(c, 404, "unknown_upload", "no such upload for this device");
		return;
	}
	if (files__patch_running(id)) {
		http_error(c, 423, "upload_busy", "a PATCH of this upload is in progress");
		return;
	}
	struct simple_job *j = calloc(1, sizeof(*j));
	if (!j) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	memcpy(j->u.file_id, id, 16);
	j->kind = 'd';
	simple_submit(c, srv, j);
}

/* ---- expiry ---- */

#define SWEEP_MAX 256 /* expired uploads dropped per sweep */

static uv_timer_t sweep_timer;

struct sweep {
	struct writer_job job;
	struct server *srv;
	uint64_t now;
	uint8_t ids[SWEEP_MAX][16];
	size_t n;
};

static int sweep_each(const struct upload_state *u, void *ud)
{
	struct sweep *s = ud;
	if (u->expires_ms < s->now && s->n < SWEEP_MAX)
		memcpy(s->ids[s->n++], u->file_id, 16);
	return 0;
}

static int sweep_commit(struct store_txn *t, void *ud)
{
	struct sweep *s = ud;
	int r;
	s->n = 0;
	if ((r = upload_all(t, sweep_each, s)) < 0)
		return r;
	for (size_t i = 0; i < s->n; i++)
		if ((r = upload_del(t, s->ids[i])) < 0)
			return r;
	return 0;
}

static void sweep_done(struct writer_job *job)
{
	struct sweep *s = job->ud;
	char part[4096];
	for (size_t i = 0; job->result == 0 && i < s->n; i++) {
		files__partial_path(s->srv, s->ids[i], part, sizeof(part));
		unlink(part);
	}
	free(s);
	files__busy--;
}

static void on_sweep(uv_timer_t *t)
{
	struct server *srv = t->data;
	struct sweep *s = srv->stopping ? NULL : calloc(1, sizeof(*s));
	if (!s)
		return;
	s->srv = srv;
	s->now = sh_now_ms();
	s->job.kind = WJOB_CALL;
	s->job.fn = sweep_commit;
	s->job.fn_ud = s;
	s->job.done = sweep_done;
	s->job.ud = s;
	files__busy++;
	writer_submit(srv->writer, &s->job);
}

int files_start(struct server *srv)
{
	uint64_t every = SH_MIN(srv->cfg.upload_expiry_ms, (uint64_t)3600 * 1000);
	int r = uv_timer_init(srv->loop, &sweep_timer);
	if (r < 0)
		return r;
	sweep_timer.data = srv;
	uv_unref((uv_handle_t *)&sweep_timer); /* it keeps nothing running */
	return uv_timer_start(&sweep_timer, on_sweep, every, every);
}

/* ---- dispatch ---- */

static int path_id(const struct http_request *req, uint8_t id[16])
{
	return sh_unhex(req->path + strlen(PREFIX), id, 16);
}

void files_on_headers(struct http_conn *c, struct server *srv, struct http_request *req)
{
	uint8_t id[16];
	bool root = !strcmp(req->path, PREFIX);
	if (!strcmp(req->path, FILES_STATUS)) {
		if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
			http_add_header(c, "Allow: GET, HEAD");
			http_error(c, 405, "method_not_allowed", "the upload status is read with GET");
		} else if (req->role == ROLE_DEVICE) {
			http_error(c, 403, "role_not_allowed", "the upload status is the office's");
		}
		return;
	}
	if (!root && path_id(req, id) < 0) {
		http_error(c, 404, "not_found", "no such file: /v1/files/<32 hex digits>");
		return;
	}
	switch (req->method) {
	case HTTP_OPTIONS:
	case HTTP_POST:
		if (!root) {
			http_add_header(c, "Allow: HEAD, GET, PATCH, DELETE");
			http_error(c, 405, "method_not_allowed", "POST and OPTIONS go to /v1/files/");
		}
		break;
	case HTTP_PATCH:
		if (root)
			http_error(c, 405, "method_not_allowed", "PATCH goes to /v1/files/<id>");
		else if (req->role != ROLE_DEVICE)
			http_error(c, 403, "role_not_allowed", "only phones upload attachments");
		else
			files__patch_headers(c, srv, req, id);
		break;
	case HTTP_HEAD:
	case HTTP_GET:
	case HTTP_DELETE:
		if (root) {
			http_add_header(c, "Allow: OPTIONS, POST");
			http_error(c, 405, "method_not_allowed", "this method takes /v1/files/<id>");
		}
		break;
	default:
		http_add_header(c, "Allow: OPTIONS, POST, HEAD, GET, PATCH, DELETE");
		http_error(c, 405, "method_not_allowed", "not a method of the upload API");
		break;
	}
}

void files_on_request(struct http_conn *c, struct server *srv, struct http_request *req)
{
	uint8_t id[16] = {0};
	char line[64];
	if (!strcmp(req->path, FILES_STATUS)) {
		files__status(c, srv, req);
		return;
	}
	if (strcmp(req->path, PREFIX))
		path_id(req, id);
	switch (req->method) {
	case HTTP_OPTIONS:
		files__tus_header(c);
		http_add_header(c, "Tus-Version: 1.0.0");
		http_add_header(c, "Tus-Extension: creation,checksum,termination,expiration");
		snprintf(line, sizeof(line), "Tus-Max-Size: %zu", srv->cfg.max_file);
		http_add_header(c, line);
		http_add_header(c, "Tus-Checksum-Algorithm: sha256");
		http_respond(c, 204, NULL, NULL, 0);
		break;
	case HTTP_POST:
		create(c, srv, req);
		break;
	case HTTP_PATCH:
		files__patch_request(c, req);
		break;
	case HTTP_DELETE:
		if (req->role != ROLE_DEVICE)
			http_error(c, 403, "role_not_allowed", "only phones terminate uploads");
		else
			terminate(c, srv, req, id);
		break;
	case HTTP_HEAD:
		/* tus HEAD is a phone's; an office token's HEAD is a download's */
		if (req->role == ROLE_DEVICE && !*req->tus.range)
			head(c, srv, req, id);
		else
			files__download(c, srv, req, id);
		break;
	default:
		files__download(c, srv, req, id);
		break;
	}
}

uint64_t files_busy(void)
{
	return files__busy;
}
