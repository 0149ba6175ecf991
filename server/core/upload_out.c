/* upload_out: attachments seen from the office: what is still to come,
 * the files written out for an export (with a manifest), and the files in
 * a backup (see upload.h). */
#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "buf.h"
#include "common.h"
#include "form.h"
#include "render.h"
#include "store.h"

/* The record's county, "" when unknown. 0 or -ENOENT (record gone). */
static int ref_record(struct store_txn *t, const struct form_registry *reg,
		      const struct upload_ref *ref, char county[4], bool *ret_sensitive)
{
	struct arena *a = arena_new();
	merge_rec_t *rec;
	if (!a)
		return -ENOMEM;
	int r = store_record_get(t, a, ref->record_id, &rec);
	county[0] = 0;
	if (r == 0) {
		const struct form *f = form_registry_find(reg, rec->form_id, rec->form_version);
		render_record_county(rec, f, county);
		const struct form_field *fd = f ? form_field(f, ref->field) : NULL;
		if (ret_sensitive)
			*ret_sensitive = !fd || fd->sensitive;
	}
	arena_free(a);
	return r;
}

static bool in_counties(const char *county, const char *const *counties, size_t n)
{
	if (!n)
		return true;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(counties[i], county))
			return true;
	return false;
}

/* ---- what is still to come ---- */

struct pending {
	struct store_txn *t;
	const struct form_registry *reg;
	const char *const *counties;
	size_t n_counties;
	uint8_t last[16];
	uint64_t last_device;
	json_t *devices, *by_county;
	json_int_t files, bytes;
};

static void add(json_t *obj, const char *key, json_int_t bytes, const char *county,
		const char *name)
{
	json_t *e = json_object_get(obj, key);
	if (!e) {
		e = json_pack("{s:I,s:I}", "files_pending", (json_int_t)0, "bytes_waiting",
			      (json_int_t)0);
		if (!e)
			return;
		if (county)
			json_object_set_new(e, "county", json_string(county));
		if (name)
			json_object_set_new(e, "name", json_string(name));
		json_object_set_new(obj, key, e);
	}
	json_object_set_new(e, "files_pending",
			    json_integer(json_integer_value(json_object_get(e, "files_pending")) + 1));
	json_object_set_new(e, "bytes_waiting",
			    json_integer(json_integer_value(json_object_get(e, "bytes_waiting")) + bytes));
}

static int pending_each(const struct upload_ref *ref, void *ud)
{
	struct pending *p = ud;
	struct upload_file f;
	struct upload_state u;
	char county[4], dev[17];
	/* a file id referenced again by the same phone (an edit) counts once */
	if (!memcmp(p->last, ref->file_id, 16) && p->last_device == ref->pusher)
		return 0;
	memcpy(p->last, ref->file_id, 16);
	p->last_device = ref->pusher;
	if (upload_file_get(p->t, ref->sha256, &f) == 0)
		return 0; /* here */
	if (ref_record(p->t, p->reg, ref, county, NULL) < 0 ||
	    !in_counties(county, p->counties, p->n_counties))
		return 0;
	uint64_t waiting = ref->size;
	if (upload_get(p->t, ref->file_id, &u) == 0 && u.offset <= waiting)
		waiting -= u.offset;
	snprintf(dev, sizeof(dev), "%016" PRIx64, ref->pusher);
	struct arena *a = arena_new();
	store_device_t *d = NULL;
	if (a && store_device_get(p->t, a, ref->pusher, &d) < 0)
		d = NULL;
	add(p->devices, dev, (json_int_t)waiting, county, d ? d->name : NULL);
	arena_free(a);
	add(p->by_county, county[0] ? county : "unknown", (json_int_t)waiting, NULL, NULL);
	p->files++;
	p->bytes += (json_int_t)waiting;
	return 0;
}

int upload_pending(struct store_txn *t, const struct form_registry *reg,
		   const char *const *counties, size_t n_counties, json_t **ret)
{
	struct pending p = {.t = t, .reg = reg, .counties = counties, .n_counties = n_counties,
			    .devices = json_object(), .by_county = json_object()};
	int r = p.devices && p.by_county ? upload_refs_all(t, pending_each, &p) : -ENOMEM;
	json_t *o = r < 0 ? NULL
			  : json_pack("{s:I,s:I,s:o,s:o}", "files_pending", p.files, "bytes_waiting",
				      p.bytes, "devices", p.devices, "counties", p.by_county);
	if (!o) {
		if (r == 0) {
			json_decref(p.devices);
			json_decref(p.by_county);
		}
		return r < 0 ? r : -ENOMEM;
	}
	*ret = o;
	return 0;
}

/* ---- export with files ---- */

/* A hard link where the file system allows, else a copy (0600). */
static int link_or_copy(const char *from, const char *to)
{
	if (link(from, to) == 0 || errno == EEXIST)
		return 0;
	int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, r = 0;
	if (in < 0)
		return -errno;
	out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		r = errno == EEXIST ? 0 : -errno;
		close(in);
		return r;
	}
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n) {
			r = -EIO;
			break;
		}
	if (n < 0)
		r = -errno;
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	close(in);
	close(out);
	if (r < 0)
		unlink(to);
	return r;
}

/* ---- the manifest's rows ---- */

struct rows {
	struct store_txn *t;
	const struct upload_scope *o;
	int (*fn)(const struct upload_row *row, void *ud);
	void *ud;
};

static int rows_each(const struct upload_ref *ref, void *ud)
{
	struct rows *w = ud;
	struct upload_row row = {.ref = *ref};
	char county[4];
	bool sensitive = true;
	if (ref_record(w->t, w->o->reg, ref, county, &sensitive) < 0 ||
	    !in_counties(county, w->o->counties, w->o->n_counties))
		return 0;
	row.left_out = sensitive && !w->o->include_sensitive;
	row.here = !row.left_out && upload_file_get(w->t, ref->sha256, &row.file) == 0;
	return w->fn(&row, w->ud);
}

int upload_rows(struct store_txn *t, const struct upload_scope *o, const struct upload_ref *after,
		int (*fn)(const struct upload_row *row, void *ud), void *ud)
{
	struct rows w = {t, o, fn, ud};
	return upload_refs_after(t, after, rows_each, &w);
}

int upload_row_csv(const struct upload_row *row, struct buf *out)
{
	char rid[37], sha[65], fid[33], when[32] = "";
	const uint8_t *b = row->ref.record_id;
	snprintf(rid, sizeof(rid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
	sh_hex(row->ref.sha256, 32, sha);
	sh_hex(row->ref.file_id, 16, fid);
	int r = buf_printf(out, "%s,%u,%s,%s,%" PRIu64 ",\"", rid, row->ref.field, fid, sha,
			   row->ref.size);
	/* media types are checked UTF-8 without controls at push; quoted anyway */
	for (const char *m = row->ref.media_type; r == 0 && *m; m++)
		r = *m == '"' ? buf_puts(out, "\"\"") : buf_putc(out, *m);
	if (r == 0 && row->here) {
		render_time_ms(row->file.received_ms, when);
		r = buf_printf(out, "\",%s,%016" PRIx64 "\r\n", when, row->file.device);
	} else if (r == 0) {
		r = buf_puts(out, "\",,\r\n"); /* referenced, not received */
	}
	return r;
}

/* ---- export with files: a folder ---- */

struct out {
	const char *data_dir, *dest;
	FILE *manifest;
	struct buf line;
	size_t files, skipped;
	int err;
};

static int out_each(const struct upload_row *row, void *ud)
{
	struct out *o = ud;
	char sha[65], from[4096], to[4096];
	if (row->left_out) {
		o->skipped++;
		return 0;
	}
	if (row->here) {
		sh_hex(row->ref.sha256, 32, sha);
		snprintf(from, sizeof(from), "%s/files/sha256/%s", o->data_dir, sha);
		snprintf(to, sizeof(to), "%s/sha256/%s", o->dest, sha);
		int r = link_or_copy(from, to);
		if (r < 0) {
			o->err = r;
			return 1;
		}
		o->files++;
	}
	buf_reset(&o->line);
	if ((o->err = upload_row_csv(row, &o->line)) < 0)
		return 1;
	if (fwrite(o->line.data, 1, o->line.len, o->manifest) != o->line.len) {
		o->err = -EIO;
		return 1;
	}
	return 0;
}

int upload_export_files(struct store *s, const struct form_registry *reg, const char *data_dir,
			const char *dest, bool include_sensitive, const char *const *counties,
			size_t n_counties, size_t *ret_files, size_t *ret_skipped)
{
	char p[4096];
	struct store_txn *t = NULL;
	if (mkdir(dest, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(p, sizeof(p), "%s/sha256", dest);
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(p, sizeof(p), "%s/manifest.csv", dest);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *m = fd < 0 ? NULL : fdopen(fd, "w");
	if (!m) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		return e;
	}
	fputs(UPLOAD_MANIFEST_HEADER, m);
	struct upload_scope sc = {.reg = reg, .include_sensitive = include_sensitive,
				  .counties = counties, .n_counties = n_counties};
	struct out o = {.data_dir = data_dir, .dest = dest, .manifest = m};
	int r = store_begin(s, false, &t);
	if (r == 0) {
		r = upload_rows(t, &sc, NULL, out_each, &o);
		store_abort(t);
	}
	buf_free(&o.line);
	if (r >= 0 && o.err < 0)
		r = o.err;
	if (fflush(m) != 0 || fsync(fileno(m)) < 0)
		r = r < 0 ? r : -EIO;
	fclose(m);
	if (r < 0)
		return r;
	*ret_files = o.files;
	*ret_skipped = o.skipped;
	return 0;
}

/* ---- backups ---- */

int upload_backup_files(const char *data_dir, const char *dest)
{
	char from[4096], to[4096];
	snprintf(from, sizeof(from), "%s/files/sha256", data_dir);
	DIR *d = opendir(from);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	snprintf(to, sizeof(to), "%s/files", dest);
	int r = mkdir(to, 0700) < 0 && errno != EEXIST ? -errno : 0;
	snprintf(to, sizeof(to), "%s/files/sha256", dest);
	if (r == 0 && mkdir(to, 0700) < 0 && errno != EEXIST)
		r = -errno;
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char a[4096 + 256], b[4096 + 256];
		snprintf(a, sizeof(a), "%s/%s", from, e->d_name);
		snprintf(b, sizeof(b), "%s/%s", to, e->d_name);
		r = link_or_copy(a, b);
	}
	closedir(d);
	return r;
}

/* ---- after an erasure ---- */

static int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* One of the two directories: names of 2 * n hex digits that the store
 * no longer has an entry for go. */
static int sweep_dir(struct store_txn *t, const char *dir, size_t n, size_t *removed)
{
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	struct dirent *e;
	int r = 0;
	while (r == 0 && (e = readdir(d))) {
		uint8_t id[32];
		if (strlen(e->d_name) != 2 * n || sh_unhex(e->d_name, id, n) < 0)
			continue; /* not ours */
		struct upload_file f;
		struct upload_state u;
		int g = n == 32 ? upload_file_get(t, id, &f) : upload_get(t, id, &u);
		if (g == 0)
			continue;
		if (g != -ENOENT) {
			r = g;
			break;
		}
		char p[4096 + 256];
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (unlink(p) < 0 && errno != ENOENT)
			r = -errno;
		else
			(*removed)++;
	}
	closedir(d);
	return r < 0 ? r : sync_dir(dir);
}

int upload_sweep(struct store *s, const char *data_dir, size_t *ret_removed)
{
	char dir[4096];
	size_t removed = 0;
	struct store_txn *t;
	int r = store_begin(s, false, &t);
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/files/sha256", data_dir);
	r = sweep_dir(t, dir, 32, &removed);
	snprintf(dir, sizeof(dir), "%s/files/partial", data_dir);
	if (r == 0)
		r = sweep_dir(t, dir, 16, &removed);
	store_abort(t);
	if (r < 0)
		return r;
	*ret_removed = removed;
	return 0;
}
