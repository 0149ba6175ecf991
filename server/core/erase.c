#include "erase.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "arena.h"
#include "audit.h"
#include "common.h"
#include "form.h"
#include "hlc.h"
#include "merge.h"
#include "rebuild.h"
#include "shahidi.pb-c.h"
#include "store.h"
#include "upload.h"
#include "uuid.h"

#define SERVER_CHANGE_BIT (1ull << 63) /* as resolve.c's office changes */

struct job {
	const uint8_t *id;
	uint64_t actor, now_ms;
	const char *actor_name, *reason;
	struct erase_report rep;
};

/* The erasure's own change: a deletion that saw every live value, marked
 * erased, with no content. Packed into raw (in a). */
static int erasure_change(struct arena *a, store_device_t *dev, const merge_rec_t *rec,
			  uint64_t hlc, struct store_change *sc, struct merge_write *w)
{
	size_t cap = 1;
	for (size_t i = 0; i < rec->n_registers; i++)
		cap += rec->registers[i]->n_entries;
	struct merge_stamp *seen = arena_alloc(a, cap * sizeof(*seen));
	struct merge_stamp *base = arena_alloc(a, cap * sizeof(*base));
	Shahidi__V1__Stamp *ps = arena_alloc(a, 2 * cap * sizeof(*ps));
	Shahidi__V1__Stamp **pseen = arena_alloc(a, cap * sizeof(*pseen));
	Shahidi__V1__Stamp **pbase = arena_alloc(a, cap * sizeof(*pbase));
	if (!seen || !base || !ps || !pseen || !pbase)
		return -ENOMEM;
	size_t n_seen = 0, n_base = 0, k = 0;
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		bool del = g->field == MERGE_DELETION_FIELD && !merge_reg_in_instance(g);
		for (size_t j = 0; j < g->n_entries; j++) {
			const merge_entry_t *e = g->entries[j];
			if (e->dead || e->pending)
				continue;
			struct merge_stamp st = {e->hlc, e->device};
			shahidi__v1__stamp__init(&ps[k]);
			ps[k].hlc = e->hlc;
			ps[k].device = e->device;
			if (del) {
				base[n_base] = st;
				pbase[n_base++] = &ps[k++];
			} else {
				bool dup = false;
				for (size_t m = 0; m < n_seen && !dup; m++)
					dup = seen[m].hlc == st.hlc && seen[m].device == st.device;
				if (!dup) {
					seen[n_seen] = st;
					pseen[n_seen++] = &ps[k++];
				}
			}
		}
	}
	dev->server_changes++;
	Shahidi__V1__Change ch = SHAHIDI__V1__CHANGE__INIT;
	Shahidi__V1__Deletion d = SHAHIDI__V1__DELETION__INIT;
	ch.change_id = SERVER_CHANGE_BIT | dev->server_changes;
	ch.record_id = rec->record_id;
	ch.form_id = rec->form_id;
	ch.form_version = rec->form_version;
	ch.hlc = hlc;
	ch.erased = true;
	d.deleted = true;
	d.supersedes = pbase;
	d.n_supersedes = n_base;
	d.seen = pseen;
	d.n_seen = n_seen;
	ch.deletion = &d;
	size_t len = shahidi__v1__change__get_packed_size(&ch);
	uint8_t *raw = arena_alloc(a, len + 1);
	if (!raw)
		return -ENOMEM;
	shahidi__v1__change__pack(&ch, raw);
	*w = (struct merge_write){.field = MERGE_DELETION_FIELD, .hlc = hlc, .base = base,
				  .n_base = (uint32_t)n_base};
	w->value = merge_deletion_value(true, &w->value_len);
	*sc = (struct store_change){
		.pusher = dev->id, .origin = dev->id, .change_id = ch.change_id,
		.record_id = rec->record_id.data, .form_id = rec->form_id,
		.form_version = rec->form_version, .raw = raw, .raw_len = len, .hlc = hlc,
		.writes = w, .n_writes = 1, .seen = seen, .n_seen = n_seen, .office = true,
	};
	crypto_generichash(sc->digest, 32, raw, len, NULL, 0);
	return 0;
}

static int erase_fn(struct store_txn *t, void *ud)
{
	struct job *j = ud;
	struct arena *a = arena_new();
	merge_rec_t *rec;
	store_device_t *dev;
	uint64_t *hist;
	size_t n_hist;
	int r = a ? 0 : -ENOMEM;
	j->rep = (struct erase_report){0};
	if (r < 0 || (r = store_record_get(t, a, j->id, &rec)) < 0)
		goto out;
	if (rec->erased_ms) {
		r = -EALREADY;
		goto out;
	}
	if ((r = store_device_get(t, a, j->actor, &dev)) < 0)
		goto out;
	if ((r = store_record_history(t, a, rec, &hist, &n_hist)) < 0)
		goto out;
	/* every change of the record: content gone, digest and link kept */
	for (size_t i = 0; i < n_hist; i++) {
		if ((r = store_log_erase(t, hist[i])) < 0)
			goto out;
	}
	j->rep.changes = n_hist;
	/* the erasure's own change: logged, and pulled by the holders */
	struct store_change sc;
	struct merge_write w;
	struct form_verdict v;
	if ((r = erasure_change(a, dev, rec, hlc_tick(store_hlc(t), j->now_ms), &sc, &w)) < 0)
		goto out;
	if ((r = apply_office_change(t, a, &sc, dev, j->now_ms, &v, &j->rep.log_seq)) < 0) {
		r = r == -EINVAL ? -EIO : r; /* refused: our own change; a bug */
		goto out;
	}
	/* the record: what the erasure's change alone makes */
	arena_reset(a);
	if ((r = store_record_get(t, a, j->id, &rec)) < 0)
		goto out;
	rec->erased_ms = j->now_ms;
	if ((r = rebuild_record(t, a, rec)) < 0)
		goto out;
	/* its attachments: what no record left names goes (the bytes on disk
	 * once this has committed: erase_record) */
	struct upload_erased ue;
	if ((r = upload_erase_record(t, j->id, j->now_ms, &ue)) < 0)
		goto out;
	j->rep.attachments = ue.references;
	j->rep.files_removed = ue.files_removed;
	j->rep.files_kept = ue.files_kept;
	j->rep.uploads_dropped = ue.uploads_dropped;
	char rid[UUID_STR_LEN + 1];
	uuid_fmt(j->id, rid);
	/* counts only: no file's name, hash or content */
	r = audit_record_txn(t, j->actor_name, "erase",
			     json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "record_id", rid, "reason",
				       j->reason, "changes_erased", (json_int_t)j->rep.changes,
				       "log_seq", (json_int_t)j->rep.log_seq, "files_removed",
				       (json_int_t)ue.files_removed, "files_kept",
				       (json_int_t)ue.files_kept, "uploads_dropped",
				       (json_int_t)ue.uploads_dropped));
out:
	arena_free(a);
	return r;
}

int erase_record(struct store *s, const uint8_t id[16], uint64_t actor, const char *actor_name,
		 const char *reason, uint64_t now_ms, struct erase_report *ret)
{
	struct job j = {.id = id, .actor = actor, .now_ms = now_ms, .actor_name = actor_name,
			.reason = reason};
	int r = store_write(s, erase_fn, &j);
	size_t swept;
	/* Committed: the bytes the store no longer names go from the disk. A
	 * crash before this leaves them until the next erasure's sweep. */
	if (r == 0 && (r = upload_sweep(s, store_dir(s), &swept)) < 0)
		r = -EREMOTEIO; /* told apart from a failed erasure */
	if (r == 0 || r == -EREMOTEIO)
		*ret = j.rep;
	return r;
}

int erase_compact(const char *dir, char *err, size_t errlen)
{
	char tmp[4096], from[4200], to[4200];
	struct store *s;
	struct store_opts o = {.read_only = true};
	snprintf(tmp, sizeof(tmp), "%s/.compact", dir);
	int r = store_open(dir, &o, &s, err, errlen);
	if (r < 0)
		return r;
	r = store_compact_copy(s, tmp, err, errlen); /* without free pages */
	store_close(s);
	if (r < 0)
		return r;
	snprintf(from, sizeof(from), "%s/data.mdb", tmp);
	snprintf(to, sizeof(to), "%s/data.mdb", dir);
	int fd = open(from, O_RDONLY);
	if (fd < 0 || fsync(fd) < 0 || close(fd) < 0 || rename(from, to) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot put the compacted store in place: %s", strerror(errno));
		return r;
	}
	snprintf(from, sizeof(from), "%s/lock.mdb", tmp);
	unlink(from);
	rmdir(tmp);
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY)) >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}
