/* upload_zip: the files' export as one streamed zip (see upload.h). */
#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "common.h"
#include "store.h"
#include "zipw.h"

#define PIECE (1u << 20)
#define ROWS_PER_STEP 2000          /* references looked at per read transaction */
#define MANIFEST_IN_MEMORY (256u << 10)

enum zphase { ZZ_SCAN, ZZ_FILE, ZZ_MANIFEST, ZZ_DONE };

struct upload_zip {
	struct upload_scope o;
	char data_dir[4096];
	struct zipw w;
	enum zphase phase;
	struct upload_ref after;     /* the last reference looked at */
	bool started;
	/* the file being copied */
	int fd;
	uint64_t off, size;
	/* hashes already in the archive: open addressing, 32 bytes a slot */
	uint8_t (*seen)[32];
	size_t seen_n, seen_cap;
	/* the manifest so far: rows in memory, then in an unlinked file */
	struct buf man;
	FILE *spool;
	uint64_t man_size;
	uint64_t files, left_out;
	/* one step's scan */
	size_t step_rows;
	struct buf *step_out;
	int step_err;
};

int upload_zip_new(const struct upload_scope *o, const char *data_dir, uint64_t start,
		   struct upload_zip **ret)
{
	struct upload_zip *z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->o = *o;
	z->fd = -1;
	snprintf(z->data_dir, sizeof(z->data_dir), "%s", data_dir);
	zipw_init(&z->w, start);
	if (buf_puts(&z->man, UPLOAD_MANIFEST_HEADER) < 0) {
		upload_zip_free(z);
		return -ENOMEM;
	}
	*ret = z;
	return 0;
}

void upload_zip_free(struct upload_zip *z)
{
	if (!z)
		return;
	if (z->fd >= 0)
		close(z->fd);
	if (z->spool)
		fclose(z->spool);
	buf_free(&z->man);
	free(z->seen);
	zipw_free(&z->w);
	free(z);
}

uint64_t upload_zip_files(const struct upload_zip *z)
{
	return z->files;
}

uint64_t upload_zip_left_out(const struct upload_zip *z)
{
	return z->left_out;
}

static size_t slot_of(const uint8_t sha[32], size_t cap)
{
	uint64_t h;
	memcpy(&h, sha, 8); /* a SHA-256 is as good a hash as any */
	return (size_t)h & (cap - 1);
}

static bool zero32(const uint8_t *p)
{
	for (int i = 0; i < 32; i++)
		if (p[i])
			return false;
	return true;
}

/* Whether sha is in the set. The all-zero hash (no real file has it)
 * marks an empty slot. */
static bool seen_has(const struct upload_zip *z, const uint8_t sha[32])
{
	if (!z->seen_cap)
		return false;
	for (size_t j = slot_of(sha, z->seen_cap); !zero32(z->seen[j]); j = (j + 1) & (z->seen_cap - 1))
		if (!memcmp(z->seen[j], sha, 32))
			return true;
	return false;
}

/* Adds sha (not in the set yet). 0 or -ENOMEM. */
static int seen_add(struct upload_zip *z, const uint8_t sha[32])
{
	if ((z->seen_n + 1) * 2 > z->seen_cap) {
		size_t cap = z->seen_cap ? z->seen_cap * 2 : 256;
		uint8_t(*t)[32] = calloc(cap, 32);
		if (!t)
			return -ENOMEM;
		for (size_t i = 0; i < z->seen_cap; i++) {
			if (zero32(z->seen[i]))
				continue;
			size_t j = slot_of(z->seen[i], cap);
			while (!zero32(t[j]))
				j = (j + 1) & (cap - 1);
			memcpy(t[j], z->seen[i], 32);
		}
		free(z->seen);
		z->seen = t;
		z->seen_cap = cap;
	}
	size_t j = slot_of(sha, z->seen_cap);
	while (!zero32(z->seen[j]))
		j = (j + 1) & (z->seen_cap - 1);
	memcpy(z->seen[j], sha, 32);
	z->seen_n++;
	return 0;
}

/* An unlinked file beside the store: the manifest names the files, as
 * private as the store is. */
static int man_flush(struct upload_zip *z)
{
	if (!z->spool && !(z->spool = sh_tmpfile(z->data_dir)))
		return -errno;
	if (fwrite(z->man.data, 1, z->man.len, z->spool) != z->man.len)
		return -EIO;
	z->man_size += z->man.len;
	buf_reset(&z->man);
	return 0;
}

/* Opens a complete file to copy: its local header goes out now. */
static int file_open(struct upload_zip *z, const uint8_t sha[32], struct buf *out)
{
	char hex[65], path[4096 + 96], name[ZIPW_NAME_MAX];
	struct stat st;
	sh_hex(sha, 32, hex);
	snprintf(path, sizeof(path), "%s/files/sha256/%s", z->data_dir, hex);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	snprintf(name, sizeof(name), "sha256/%s", hex);
	int r = zipw_begin(&z->w, name, (uint64_t)st.st_size, out);
	if (r < 0) {
		close(fd);
		return r;
	}
	z->fd = fd;
	z->off = 0;
	z->size = (uint64_t)st.st_size;
	return 0;
}

static int scan_each(const struct upload_row *row, void *ud)
{
	struct upload_zip *z = ud;
	struct upload_row r2 = *row;
	int r = 0;
	z->after = row->ref;
	z->started = true;
	z->step_rows++;
	if (row->left_out) {
		z->left_out++;
		return z->step_rows >= ROWS_PER_STEP;
	}
	if (row->here && !seen_has(z, row->ref.sha256)) { /* else in the archive already */
		r = file_open(z, row->ref.sha256, z->step_out);
		if (r == -ENOENT) {
			/* erased since this page's snapshot was taken: its row
			 * says so (not received) rather than name a file the
			 * archive lacks */
			r2.here = false;
			r = 0;
		} else if (r == 0 && (r = seen_add(z, row->ref.sha256)) == 0) {
			z->phase = ZZ_FILE;
		}
	}
	if (r == 0)
		r = upload_row_csv(&r2, &z->man);
	if (r == 0 && z->man.len >= MANIFEST_IN_MEMORY)
		r = man_flush(z);
	if (r < 0) {
		z->step_err = r;
		return 1;
	}
	return z->phase == ZZ_FILE || z->step_rows >= ROWS_PER_STEP;
}

static int step_scan(struct upload_zip *z, struct store *s, struct buf *out)
{
	struct store_txn *t;
	int r = store_begin(s, false, &t);
	if (r < 0)
		return r;
	z->step_rows = 0;
	z->step_out = out;
	z->step_err = 0;
	r = upload_rows(t, &z->o, z->started ? &z->after : NULL, scan_each, z);
	store_abort(t);
	if (z->step_err < 0)
		return z->step_err;
	if (r < 0)
		return r;
	if (r == 0) /* the end of the references */
		z->phase = ZZ_MANIFEST;
	return 0;
}

static int step_file(struct upload_zip *z, struct buf *out)
{
	size_t want = (size_t)SH_MIN(z->size - z->off, (uint64_t)PIECE);
	int r = buf_reserve(out, want + 64);
	if (r < 0)
		return r;
	while (want) {
		ssize_t n = pread(z->fd, out->data + out->len, want, (off_t)z->off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO; /* shorter than it was: the archive is cut */
		zipw_data(&z->w, out->data + out->len, (size_t)n);
		out->len += (size_t)n;
		z->off += (uint64_t)n;
		want -= (size_t)n;
	}
	if (z->off < z->size)
		return 0;
	if ((r = zipw_end(&z->w, out)) < 0)
		return r;
	close(z->fd);
	z->fd = -1;
	z->files++;
	z->phase = ZZ_SCAN;
	return 0;
}

/* The manifest (from its spool, a piece at a time), then the end. */
static int step_manifest(struct upload_zip *z, struct buf *out, bool *ret_done)
{
	int r;
	if (!z->w.open) {
		if (z->spool) {
			if ((r = man_flush(z)) < 0)
				return r;
			if (fflush(z->spool) != 0 || fseek(z->spool, 0, SEEK_SET) != 0)
				return -EIO;
		} else {
			z->man_size = z->man.len;
		}
		if ((r = zipw_begin(&z->w, "manifest.csv", z->man_size, out)) < 0)
			return r;
	}
	if (z->spool) {
		if ((r = buf_reserve(out, PIECE)) < 0)
			return r;
		size_t got = fread(out->data + out->len, 1, PIECE, z->spool);
		if (ferror(z->spool))
			return -EIO;
		zipw_data(&z->w, out->data + out->len, got);
		out->len += got;
		if (got == PIECE)
			return 0;
	} else {
		if ((r = buf_append(out, z->man.data, z->man.len)) < 0)
			return r;
		zipw_data(&z->w, z->man.data, z->man.len);
	}
	if ((r = zipw_end(&z->w, out)) < 0 || (r = zipw_finish(&z->w, out)) < 0)
		return r;
	z->phase = ZZ_DONE;
	*ret_done = true;
	return 0;
}

int upload_zip_next(struct upload_zip *z, struct store *s, struct buf *out, bool *ret_done)
{
	*ret_done = false;
	switch (z->phase) {
	case ZZ_SCAN:
		return step_scan(z, s, out);
	case ZZ_FILE:
		return step_file(z, out);
	case ZZ_MANIFEST:
		return step_manifest(z, out, ret_done);
	case ZZ_DONE:
		*ret_done = true;
		return 0;
	}
	return -EINVAL;
}
