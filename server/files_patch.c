/* files_patch: a tus PATCH, from its headers to its answer: the body
 * written as it arrives (checked against Upload-Checksum), then its bytes
 * to the disk in the uploads' one turn, whole-file hash, fdatasync, and
 * the new offset (or the complete file) committed by the writer before
 * the offset is answered. files.c routes to it (see files_int.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common.h"
#include "files_int.h"
#include "http.h"
#include "server.h"
#include "upload.h"
#include "writer.h"

static struct patch *patches; /* PATCHes in progress: one per upload */

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
		ssize_t got = pread(fd, buf, (size_t)SH_MIN(n, (uint64_t)FILES_CHUNK), (off_t)off);
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
	p->r = files__fsync_dir(dir);
}

/* Off the loop, in the turn: the request's bytes written out in steps and
 * hashed as they go, then synced (the file's name too, the first time);
 * the last byte's arrival checks the whole file and files it by hash. */
static void patch_write_back(uv_work_t *w)
{
	struct patch *p = w->data;
	char dir[4096];
	uint64_t from = p->u.offset, to = p->u.offset + p->written;
	uint8_t *buf = malloc(FILES_CHUNK);
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
		p->r = files__fsync_dir(dir);
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
		files__tus_header(c);
		http_error(c, 460, "file_hash_mismatch",
			   "the whole file's SHA-256 is not the one its record names: the upload "
			   "was discarded; start again with POST");
	} else {
		files__tus_header(c);
		files__offset_headers(c, p->u.offset + p->written, UINT64_MAX);
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

void files__patch_headers(struct http_conn *c, struct server *srv, struct http_request *req,
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
	if (files__header_u64(req->tus.offset, &off) < 0) {
		http_error(c, 400, "bad_offset", "Upload-Offset is required, a decimal number");
		return;
	}
	if (req->chunked) {
		http_error(c, 411, "length_required", "PATCH needs a Content-Length");
		return;
	}
	if ((r = files__own_ref(srv, id, req->device, &ref)) == 0)
		r = files__read_upload(srv, id, &u, NULL, NULL);
	if (r == 0 && u.expires_ms < sh_now_ms())
		r = -ETIME;
	if (r == -ENOENT && files__erased(srv, id)) {
		files__erased_error(c);
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
		files__tus_header(c);
		files__offset_headers(c, u.offset, u.length);
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
	if (files__ensure_dirs(srv) < 0 || (p->fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
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

void files__patch_request(struct http_conn *c, struct http_request *req)
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
			files__tus_header(c);
			files__offset_headers(c, p->u.offset, UINT64_MAX);
			http_error(c, 460, "checksum_mismatch",
				   "the bytes do not match Upload-Checksum; the offset is unchanged");
			patch_free(p);
			return;
		}
	}
	patch_finish(p);
}

bool files__patch_running(const uint8_t id[16])
{
	return patch_of(id) != NULL;
}
