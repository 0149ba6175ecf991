/* files: the tus 1.0.0 routes and downloads (see files.h). */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <llhttp.h>
#include <openssl/evp.h>
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
#define COPY_CHUNK FILES_CHUNK

uint64_t files__busy;           /* async work in flight */
static struct patch *patches;   /* PATCHes in progress: one per upload */

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

static int ensure_dirs(const struct server *srv)
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

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* ---- headers ---- */

static void tus_header(struct http_conn *c)
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

static void offset_headers(struct http_conn *c, uint64_t offset, uint64_t length)
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
static int header_u64(const char *s, uint64_t *ret)
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
static int own_ref(struct server *srv, const uint8_t id[16], uint64_t device,
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

static void erased_error(struct http_conn *c)
{
	http_error(c, 410, "file_erased",
		   "the file was erased with its record at its data subject's request");
}

static int read_upload(struct server *srv, const uint8_t id[16], struct upload_state *u,
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

static struct patch *patch_of(const uint8_t id[16]);

/* ---- PATCH ---- */

struct patch {
	struct server *srv;
	struct http_conn *c;       /* NULL once the client has gone */
	struct upload_state u;     /* as it was at the headers */
	int fd;
	uint64_t written;          /* this request's bytes in the file */
	bool has_sum, failed;
	uint8_t sum[32];
	crypto_hash_sha256_state hs;
	/* results */
	int r;
	bool complete, hash_bad, stale;
	uv_work_t work;
	struct writer_job job;
	struct patch *next;
	struct patch *disk_next;   /* waiting for its turn at the disk */
};

static struct patch *patch_of(const uint8_t id[16])
{
	for (struct patch *p = patches; p; p = p->next)
		if (!memcmp(p->u.file_id, id, 16))
			return p;
	return NULL;
}

static void patch_free(struct patch *p)
{
	struct server *srv = p->srv;
	for (struct patch **pp = &patches; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	if (p->fd >= 0)
		close(p->fd);
	if (p->c)
		http_conn_unref(p->c);
	free(p);
	files__busy--;
	http_kick(srv);
}

static int patch_sink(void *ud, const uint8_t *b, size_t n)
{
	struct patch *p = ud;
	if (p->failed)
		return -EIO;
	while (n) {
		ssize_t w = pwrite(p->fd, b, n, (off_t)(p->u.offset + p->written));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			p->failed = true;
			/* a full disk, quota or file size limit: 507 */
			return w < 0 && (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) ? -ENOSPC
											     : -EIO;
		}
		if (p->has_sum)
			crypto_hash_sha256_update(&p->hs, b, (size_t)w);
		p->written += (uint64_t)w;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- the bytes to the disk, one upload at a time ----
 *
 * A store commit's fdatasync waits for whatever is queued at the disk
 * before it (a virtual disk's cache flush drains it all). Sixteen uploads
 * each syncing 4 MiB at once put 64 MiB ahead of it, and took the thread
 * pool that decodes pushes besides: a push's p99 went from ~10 ms to
 * ~300 ms. So the uploads' bytes go to the disk in one turn (one pool
 * thread at most, the others stay free for pushes), in steps of WB_STEP
 * with at most two in flight: a commit finds at most 2 MiB of uploads
 * ahead of it; and a step waits while a commit is syncing (a little at
 * most: yield_to_store). The offset is still acknowledged only after
 * fdatasync.
 *
 * The whole file's SHA-256 is taken in the same turn, step by step while
 * the disk writes the next one (the bytes are read back from the page
 * cache), so that the last byte's check is not 20 MB of hashing at once
 * on a pool thread a push is waiting for. A hash whose upload moved on
 * without it (a restart, an offset that was not committed) is dropped,
 * and the check reads the whole file instead. */
#define WB_STEP ((uint64_t)1 << 20)
#define HASHES 64 /* uploads whose running hash is kept */

static struct patch *disk_head, *disk_tail; /* waiting for the turn */
static bool disk_busy;                       /* one of them has it */

/* Only touched in the turn (one pool thread at a time; libuv's queue
 * orders one turn's writes before the next's reads). */
static struct running_hash {
	uint8_t file_id[16];
	uint64_t at;       /* bytes hashed: the upload's offset they reach */
	uint64_t used;     /* for eviction: the turn's clock */
	bool live;
	EVP_MD_CTX *ctx;   /* made once, reused; reachable until exit */
} hashes[HASHES];
static uint64_t hash_clock;

/* The running hash of p's upload at p->u.offset, or a fresh one at 0; NULL
 * when the upload is elsewhere (then the check reads the whole file). */
static struct running_hash *hash_of(const struct patch *p)
{
	struct running_hash *h = NULL, *old = &hashes[0];
	for (size_t i = 0; i < HASHES; i++) {
		if (hashes[i].live && !memcmp(hashes[i].file_id, p->u.file_id, 16))
			h = &hashes[i];
		if (!hashes[i].live || (old->live && hashes[i].used < old->used))
			old = &hashes[i];
	}
	if (h && h->at != p->u.offset)
		h->live = false; /* moved on without it */
	if (h && h->live)
		return h;
	if (p->u.offset != 0)
		return NULL;
	h = h ? h : old;
	h->live = false;
	if (!h->ctx && !(h->ctx = EVP_MD_CTX_new()))
		return NULL;
	if (!EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL))
		return NULL;
	memcpy(h->file_id, p->u.file_id, 16);
	h->at = 0;
	h->live = true;
	return h;
}

/* Waits, a little at most, while a store commit is syncing: what the turn
 * sends the disk now would be queued ahead of it. Bounded, so that
 * uploads go on (a step per YIELD_MAX_NS at worst) under pushes that commit
 * back to back. */
#define YIELD_MAX_NS (20 * 1000000ll)

static void yield_to_store(struct server *srv)
{
	struct timespec pause = {0, 250000};
	for (long long waited = 0; store_committing(srv->store) && waited < YIELD_MAX_NS;
	     waited += pause.tv_nsec)
		nanosleep(&pause, NULL);
}

/* --upload-rate: the turn's bytes a second, all uploads together. Waits
 * until n more bytes are within it (only the turn touches this). */
static uint64_t rate_next_ns;

static void rate_wait(struct server *srv, uint64_t n)
{
	uint64_t rate = srv->cfg.upload_rate, now = sh_mono_ns();
	if (!rate)
		return;
	if (rate_next_ns > now) {
		uint64_t d = rate_next_ns - now;
		struct timespec ts = {(time_t)(d / 1000000000), (long)(d % 1000000000)};
		nanosleep(&ts, NULL);
	} else {
		rate_next_ns = now; /* idle: no credit saved up beyond now */
	}
	rate_next_ns += n * 1000000000ull / rate;
}

/* Hashes [off, off + n) of the file as written (from the page cache). */
static int hash_range(int fd, EVP_MD_CTX *ctx, uint8_t *buf, uint64_t off, uint64_t n)
{
	while (n) {
		ssize_t got = pread(fd, buf, (size_t)SH_MIN(n, (uint64_t)COPY_CHUNK), (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		if (!EVP_DigestUpdate(ctx, buf, (size_t)got))
			return -ENOMEM;
		off += (uint64_t)got;
		n -= (uint64_t)got;
	}
	return 0;
}

/* The last byte has arrived: the whole file's hash against the record's
 * (from the running hash, or read whole), then filed by hash. */
static void patch_file(struct patch *p, struct running_hash *h, uint8_t *buf)
{
	char part[4096], dest[4096], dir[4096];
	uint8_t whole[32];
	if (h && h->at == p->u.length) {
		p->r = EVP_DigestFinal_ex(h->ctx, whole, NULL) ? 0 : -ENOMEM;
		h->live = false; /* done with */
	} else {
		if (h)
			h->live = false;
		files__partial_path(p->srv, p->u.file_id, part, sizeof(part));
		EVP_MD_CTX *all = EVP_MD_CTX_new();
		int fd = open(part, O_RDONLY | O_CLOEXEC);
		if (!all || fd < 0 || !EVP_DigestInit_ex(all, EVP_sha256(), NULL))
			p->r = fd < 0 ? -errno : -ENOMEM;
		else if ((p->r = hash_range(fd, all, buf, 0, p->u.length)) == 0)
			p->r = EVP_DigestFinal_ex(all, whole, NULL) ? 0 : -ENOMEM;
		if (fd >= 0)
			close(fd);
		EVP_MD_CTX_free(all);
	}
	if (p->r < 0)
		return;
	if (memcmp(whole, p->u.sha256, 32)) {
		p->hash_bad = true;
		return;
	}
	/* Stored once by its hash: a second upload of the same bytes finds
	 * it there. The directory is synced before the store says so. */
	files__partial_path(p->srv, p->u.file_id, part, sizeof(part));
	files__file_path(p->srv, p->u.sha256, dest, sizeof(dest));
	if (link(part, dest) < 0 && errno != EEXIST) {
		p->r = errno == ENOSPC ? -ENOSPC : -errno;
		return;
	}
	snprintf(dir, sizeof(dir), "%s/files/sha256", p->srv->cfg.data_dir);
	p->r = fsync_dir(dir);
}

/* Off the loop, in the turn: the request's bytes written out in steps and
 * hashed as they go, then synced (the file's name too, the first time);
 * the last byte's arrival checks the whole file and files it by hash. */
static void patch_write_back(uv_work_t *w)
{
	struct patch *p = w->data;
	char dir[4096];
	uint64_t from = p->u.offset, to = p->u.offset + p->written;
	uint8_t *buf = malloc(COPY_CHUNK);
	struct running_hash *h = hash_of(p);
	p->r = buf ? 0 : -ENOMEM;
	hash_clock++;
	/* step k starts while step k-1 is waited for: two in flight keep the
	 * disk busy (one alone left it idle between steps: half the speed) */
	for (uint64_t off = from; off < to && p->r == 0; off += WB_STEP) {
		uint64_t n = SH_MIN(WB_STEP, to - off);
		rate_wait(p->srv, n);
		yield_to_store(p->srv);
		if (sync_file_range(p->fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE) < 0) {
			p->r = errno == ENOSPC ? -ENOSPC : -errno;
			break;
		}
		if (h && (p->r = hash_range(p->fd, h->ctx, buf, off, n)) < 0)
			break;
		if (off > from &&
		    sync_file_range(p->fd, (off_t)(off - WB_STEP), (off_t)WB_STEP,
				    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
					    SYNC_FILE_RANGE_WAIT_AFTER) < 0)
			p->r = errno == ENOSPC ? -ENOSPC : -errno;
	}
	if (p->r == 0)
		yield_to_store(p->srv);
	if (p->r == 0 && fdatasync(p->fd) < 0)
		p->r = errno == ENOSPC ? -ENOSPC : -errno;
	if (p->r == 0 && p->u.offset == 0) {
		/* the file's first bytes: its name must survive a power cut too */
		snprintf(dir, sizeof(dir), "%s/files/partial", p->srv->cfg.data_dir);
		p->r = fsync_dir(dir);
	}
	if (h) {
		if (p->r == 0) {
			h->at = to;
			h->used = hash_clock;
		} else {
			h->live = false;
		}
	}
	if (p->r == 0 && p->complete)
		patch_file(p, h, buf);
	free(buf);
}

/* In the writer's transaction: the new offset, or the file complete.
 * Refusals return 0 (p->stale): an error would spoil the whole group. */
static int patch_commit(struct store_txn *t, void *ud)
{
	struct patch *p = ud;
	struct upload_state now;
	p->stale = false;
	int r = upload_get(t, p->u.file_id, &now);
	if (r == -ENOENT || (r == 0 && now.offset != p->u.offset)) {
		p->stale = true; /* terminated or expired meanwhile */
		return 0;
	}
	if (r < 0)
		return r;
	if (p->hash_bad)
		return upload_del(t, p->u.file_id);
	if (!p->complete) {
		now.offset = p->u.offset + p->written;
		return upload_put(t, &now);
	}
	struct upload_file f = {.size = p->u.length, .received_ms = sh_now_ms(),
				.device = p->u.device};
	memcpy(f.sha256, p->u.sha256, 32);
	memcpy(f.file_id, p->u.file_id, 16);
	struct upload_file old;
	if ((r = upload_file_get(t, p->u.sha256, &old)) == -ENOENT)
		r = upload_file_put(t, &f);
	if (r < 0)
		return r;
	return upload_del(t, p->u.file_id);
}

static void patch_committed(struct writer_job *job)
{
	struct patch *p = job->ud;
	struct http_conn *c = p->c;
	if (job->result == 0 && !p->stale && (p->complete || p->hash_bad)) {
		char part[4096];
		files__partial_path(p->srv, p->u.file_id, part, sizeof(part));
		unlink(part); /* filed by hash, or discarded */
	}
	if (!c) {
		/* the client went away: what arrived is kept; nobody to answer */
	} else if (job->result == -ENOSPC) {
		http_error(c, 507, "storage_full", "the server's store is full; the offset is unchanged");
	} else if (job->result < 0) {
		http_error(c, 500, "internal", "the upload's state could not be stored");
	} else if (p->stale) {
		http_error(c, 404, "unknown_upload", "the upload was terminated or expired meanwhile");
	} else if (p->hash_bad) {
		tus_header(c);
		http_error(c, 460, "file_hash_mismatch",
			   "the whole file's SHA-256 is not the one its record names: the upload "
			   "was discarded; start again with POST");
	} else {
		tus_header(c);
		offset_headers(c, p->u.offset + p->written, UINT64_MAX);
		http_respond(c, 204, NULL, NULL, 0);
	}
	patch_free(p);
}

static void patch_synced(uv_work_t *w, int status)
{
	struct patch *p = w->data;
	(void)status;
	if (p->r < 0) {
		if (p->c) {
			if (p->r == -ENOSPC)
				http_error(p->c, 507, "storage_full",
					   "the server's disk is full; the offset is unchanged");
			else
				http_error(p->c, 500, "internal", "the bytes could not be synced");
		}
		patch_free(p);
		return;
	}
	p->job.kind = WJOB_CALL;
	p->job.fn = patch_commit;
	p->job.fn_ud = p;
	p->job.done = patch_committed;
	p->job.ud = p;
	writer_submit(p->srv->writer, &p->job);
}

static void disk_next(struct server *srv);

static void patch_written(uv_work_t *w, int status)
{
	struct patch *p = w->data;
	disk_busy = false;
	disk_next(p->srv); /* the next upload's turn */
	patch_synced(w, status);
}

/* Gives the disk's turn to the first upload waiting for it. */
static void disk_next(struct server *srv)
{
	while (!disk_busy && disk_head) {
		struct patch *p = disk_head;
		if (!(disk_head = p->disk_next))
			disk_tail = NULL;
		p->disk_next = NULL;
		disk_busy = true;
		if (uv_queue_work(srv->loop, &p->work, patch_write_back, patch_written) < 0) {
			disk_busy = false;
			p->r = -EAGAIN;
			patch_synced(&p->work, 0);
		}
	}
}

static void patch_finish(struct patch *p)
{
	p->complete = p->u.offset + p->written == p->u.length;
	p->work.data = p;
	if (disk_tail)
		disk_tail->disk_next = p;
	else
		disk_head = p;
	disk_tail = p;
	disk_next(p->srv);
}

/* The request ended before its body did: without a checksum to check,
 * what arrived is kept (a 2G link drops; the phone goes on from HEAD). */
static void patch_abort(void *ud)
{
	struct patch *p = ud;
	if (p->c) {
		http_conn_unref(p->c);
		p->c = NULL;
	}
	if (p->failed || p->has_sum || !p->written) {
		patch_free(p);
		return;
	}
	patch_finish(p);
}

static void patch_headers(struct http_conn *c, struct server *srv, struct http_request *req,
			  const uint8_t id[16])
{
	struct upload_ref ref;
	struct upload_state u;
	uint64_t off;
	int r;
	if (strncasecmp(req->tus.content_type, "application/offset+octet-stream", 31)) {
		http_error(c, 415, "bad_content_type",
			   "PATCH takes Content-Type: application/offset+octet-stream");
		return;
	}
	if (header_u64(req->tus.offset, &off) < 0) {
		http_error(c, 400, "bad_offset", "Upload-Offset is required, a decimal number");
		return;
	}
	if (req->chunked) {
		http_error(c, 411, "length_required", "PATCH needs a Content-Length");
		return;
	}
	if ((r = own_ref(srv, id, req->device, &ref)) == 0)
		r = read_upload(srv, id, &u, NULL, NULL);
	if (r == 0 && u.expires_ms < sh_now_ms())
		r = -ETIME;
	if (r == -ENOENT && files__erased(srv, id)) {
		erased_error(c);
		return;
	}
	if (r < 0) {
		http_error(c, r == -ETIME ? 410 : 404, r == -ETIME ? "upload_expired" : "unknown_upload",
			   r == -ETIME ? "the upload expired; start again with POST"
				       : "no such upload for this device");
		return;
	}
	if (patch_of(id)) {
		http_error(c, 423, "upload_busy", "another PATCH of this upload is in progress");
		return;
	}
	if (off != u.offset) {
		tus_header(c);
		offset_headers(c, u.offset, u.length);
		http_error(c, 409, "offset_mismatch", "Upload-Offset is not where the upload stands");
		return;
	}
	struct patch *p = calloc(1, sizeof(*p));
	if (!p) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	p->srv = srv;
	p->u = u;
	p->fd = -1;
	if (req->tus.checksum[0]) {
		const char *b = req->tus.checksum + 7;
		size_t dl;
		if (strncasecmp(req->tus.checksum, "sha256 ", 7) ||
		    sodium_base642bin(p->sum, 32, b, strlen(b), NULL, &dl, NULL,
				      sodium_base64_VARIANT_ORIGINAL) < 0 || dl != 32) {
			free(p);
			http_error(c, 400, "bad_checksum",
				   "Upload-Checksum must be sha256 and a base64 SHA-256");
			return;
		}
		p->has_sum = true;
		crypto_hash_sha256_init(&p->hs);
	}
	char part[4096];
	files__partial_path(srv, id, part, sizeof(part));
	if (ensure_dirs(srv) < 0 || (p->fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		free(p);
		http_error(c, 500, "internal", "cannot open the upload's file");
		return;
	}
	files__busy++;
	p->next = patches;
	patches = p;
	p->c = c;
	http_conn_ref(c);
	req->body_limit = (size_t)SH_MIN(u.length - u.offset, (uint64_t)SIZE_MAX);
	req->body_sink = patch_sink;
	req->body_abort = patch_abort;
	req->body_ud = p;
}

static void patch_request(struct http_conn *c, struct http_request *req)
{
	struct patch *p = req->body_ud;
	if (!p) {
		http_error(c, 500, "internal", "the upload was not prepared");
		return;
	}
	if (p->has_sum) {
		uint8_t got[32];
		crypto_hash_sha256_final(&p->hs, got);
		if (memcmp(got, p->sum, 32)) {
			tus_header(c);
			offset_headers(c, p->u.offset, UINT64_MAX);
			http_error(c, 460, "checksum_mismatch",
				   "the bytes do not match Upload-Checksum; the offset is unchanged");
			patch_free(p);
			return;
		}
	}
	patch_finish(p);
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
			tus_header(c);
			http_respond(c, 204, NULL, NULL, 0);
		}
	} else {
		sh_hex(j->u.file_id, 16, hex);
		snprintf(line, sizeof(line), "Location: " PREFIX "%s", hex);
		http_add_header(c, line);
		tus_header(c);
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
	if (header_u64(req->tus.length, &len) < 0) {
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
	if ((r = own_ref(srv, id, req->device, &ref)) == -ENOENT && files__erased(srv, id)) {
		erased_error(c);
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
	r = read_upload(srv, id, &u, &done, ref.sha256);
	if ((r == 0 && u.expires_ms >= sh_now_ms()) || r == 1) {
		/* under way, or the same bytes are here already: go on from HEAD */
		http_add_header(c, line);
		tus_header(c);
		http_respond(c, 201, NULL, NULL, 0);
		return;
	}
	if (r < 0 && r != -ENOENT) {
		http_error(c, 500, "internal", "the store could not be read");
		return;
	}
	struct statvfs vfs;
	if (ensure_dirs(srv) < 0 ||
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
		fsync_dir(line);
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
	int r = own_ref(srv, id, req->device, &ref);
	if (r == 0)
		r = read_upload(srv, id, &u, &done, ref.sha256);
	tus_header(c);
	if (r == 0 && u.expires_ms < sh_now_ms()) {
		http_error(c, 410, "upload_expired", "the upload expired; start again with POST");
	} else if (r == 0) {
		offset_headers(c, u.offset, u.length);
		expires_header(c, u.expires_ms);
		http_respond(c, 200, NULL, NULL, 0);
	} else if (r == 1) {
		offset_headers(c, done.size, done.size);
		http_respond(c, 200, NULL, NULL, 0);
	} else if (r == -ENOENT && files__erased(srv, id)) {
		erased_error(c);
	} else {
		http_error(c, 404, "unknown_upload", "no such upload for this device");
	}
}

static void terminate(struct http_conn *c, struct server *srv, struct http_request *req,
		      const uint8_t id[16])
{
	struct upload_ref ref;
	int r = own_ref(srv, id, req->device, &ref);
	if (r == -ENOENT && files__erased(srv, id)) {
		erased_error(c);
		return;
	}
	if (r < 0) {
		http_error(c, 404, "unknown_upload", "no such upload for this device");
		return;
	}
	if (patch_of(id)) {
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
			patch_headers(c, srv, req, id);
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
		tus_header(c);
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
		patch_request(c, req);
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
