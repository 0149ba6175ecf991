/* loadgen_verify: what the server acknowledged is what the store holds.
 *
 * For every record the run wrote, its history in the store (the change-log
 * entries of the record) is compared with the changes the run sent to it:
 *   - an acknowledged change (APPLIED or DUPLICATE) is there exactly once;
 *   - a change never answered (in doubt) is there at most once;
 *   - a change refused, rejected or never sent is not there;
 *   - nothing is there that the run did not send.
 * Then the log as a whole: it grew by exactly the entries found, so nothing
 * was stored twice or elsewhere. And the merge: a shared record edited from
 * the same base by k >= 1 devices has k live values in field 140 (a conflict
 * when k >= 2); records only their owner wrote have no conflict, and are
 * deleted or not as their owner's last deletion change said.
 *
 * It reads the store directly (read-only, beside the running server), in
 * short read transactions of a few hundred records each.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "codec.h"
#include "fields.h"
#include "common.h"
#include "loadgen.h"
#include "merge.h"
#include "store.h"
#include "uuid.h"

#define RECORDS_PER_TXN 256

struct expect {
	uint64_t device;    /* device id */
	uint64_t change_id;
	unsigned dev_idx;
	uint8_t kind;
	uint8_t status;
	uint32_t seen;      /* times found in the record's history */
};

struct vstate {
	struct lg_run *run;
	struct lg_verify *v;
	struct expect *exp;  /* every change sent or not, grouped by record */
	size_t *first;       /* record g's changes: exp[first[g]..first[g+1]) */
	size_t n_recs;
	size_t *rec_base;    /* device i's records start at rec_base[i] */
	uint64_t entries;    /* log entries found in our records' histories */
	unsigned problems;
};

static void fail(struct vstate *vs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct vstate *vs, const char *fmt, ...)
{
	if (vs->problems++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(vs->v->why, sizeof(vs->v->why), fmt, ap);
		va_end(ap);
	}
}

static int cmp_expect(const void *a, const void *b)
{
	const struct expect *x = a, *y = b;
	if (x->device != y->device)
		return x->device < y->device ? -1 : 1;
	return x->change_id < y->change_id ? -1 : x->change_id > y->change_id;
}

static const char *status_name(uint8_t s)
{
	switch (s) {
	case LG_UNSENT: return "never sent";
	case LG_FAILED: return "refused with its batch";
	case LG_IN_DOUBT: return "never answered";
	case LG_APPLIED: return "acknowledged APPLIED";
	case LG_DUPLICATE: return "acknowledged DUPLICATE";
	case LG_REJECTED: return "REJECTED";
	default: return "?";
	}
}

/* Groups every change by the record it writes (a counting sort). */
static int group_changes(struct vstate *vs)
{
	struct lg_run *run = vs->run;
	size_t total = 0;
	if (!(vs->rec_base = calloc(run->n_dev + 1, sizeof(*vs->rec_base))))
		return -ENOMEM;
	for (unsigned i = 0; i < run->n_dev; i++) {
		vs->rec_base[i] = vs->n_recs;
		vs->n_recs += run->dev[i].n_recs;
		total += run->dev[i].n_changes;
	}
	vs->first = calloc(vs->n_recs + 2, sizeof(*vs->first));
	vs->exp = calloc(total + 1, sizeof(*vs->exp));
	if (!vs->first || !vs->exp)
		return -ENOMEM;
	for (unsigned i = 0; i < run->n_dev; i++)
		for (size_t k = 0; k < run->dev[i].n_changes; k++) {
			const struct lg_change *lc = &run->dev[i].changes[k];
			unsigned owner = lc->kind >= LG_SHARED_CREATE ? 0 : i;
			vs->first[vs->rec_base[owner] + lc->rec + 1]++;
		}
	for (size_t g = 0; g < vs->n_recs; g++)
		vs->first[g + 1] += vs->first[g];
	size_t *at = calloc(vs->n_recs + 1, sizeof(*at));
	if (!at)
		return -ENOMEM;
	memcpy(at, vs->first, vs->n_recs * sizeof(*at));
	for (unsigned i = 0; i < run->n_dev; i++)
		for (size_t k = 0; k < run->dev[i].n_changes; k++) {
			const struct lg_device *d = &run->dev[i];
			const struct lg_change *lc = &d->changes[k];
			unsigned owner = lc->kind >= LG_SHARED_CREATE ? 0 : i;
			struct expect *e = &vs->exp[at[vs->rec_base[owner] + lc->rec]++];
			e->device = d->id;
			e->change_id = d->first_change_id + k;
			e->dev_idx = i;
			e->kind = lc->kind;
			e->status = lc->status;
		}
	free(at);
	for (size_t g = 0; g < vs->n_recs; g++)
		qsort(vs->exp + vs->first[g], vs->first[g + 1] - vs->first[g], sizeof(*vs->exp),
		      cmp_expect);
	return 0;
}

/* The change id and origin of a change as the log holds it. */
static int change_key(const store_log_t *e, uint64_t *ret_id, uint64_t *ret_origin)
{
	struct pb_field f;
	size_t pos = 0;
	uint64_t id = 0, origin = 0;
	int r;
	while ((r = codec_pb_next(e->change.data, e->change.len, &pos, &f)) > 0) {
		if (f.number == CHANGE_CHANGE_ID && f.wire_type == 0)
			id = f.varint;
		else if (f.number == CHANGE_ORIGIN && f.wire_type == 1)
			origin = f.varint;
	}
	if (r < 0)
		return r;
	*ret_id = id;
	*ret_origin = origin ? origin : e->device;
	return 0;
}

/* Checks one record's history against the changes sent to it. */
static int check_history(struct vstate *vs, struct store_txn *t, struct arena *a,
			 const merge_rec_t *rec, struct expect *ex, size_t n, const char *idtxt)
{
	uint64_t found = 0, *hist;
	size_t n_hist;
	int r = store_record_history(t, a, rec, &hist, &n_hist);
	if (r < 0)
		return r;
	for (size_t h = 0; h < n_hist; h++) {
		uint64_t log_seq = hist[h];
		store_log_t *e;
		uint64_t id, origin;
		if ((r = store_log_get(t, a, log_seq, &e)) < 0)
			return r;
		if ((r = change_key(e, &id, &origin)) < 0) {
			fail(vs, "log entry %" PRIu64 " does not decode", log_seq);
			continue;
		}
		found++;
		struct expect key = {.device = origin, .change_id = id};
		struct expect *x = bsearch(&key, ex, n, sizeof(*ex), cmp_expect);
		if (!x)
			fail(vs, "record %s holds change %" PRIu64 " of device %016" PRIx64
				 ", which this run never sent to it", idtxt, id, origin);
		else
			x->seen++;
	}
	vs->entries += found;
	if (found != rec->changes)
		fail(vs, "record %s counts %" PRIu64 " changes but its history holds %" PRIu64,
		     idtxt, rec->changes, found);
	for (size_t i = 0; i < n; i++) {
		const struct expect *x = &ex[i];
		if (lg_acked(x->status) && x->seen == 1)
			vs->v->changes++;
		else if (lg_acked(x->status) || x->seen > 1 ||
			 (x->seen && x->status != LG_IN_DOUBT))
			fail(vs, "change %" PRIu64 " of device %016" PRIx64
				 " (%s) is in the store %u times, record %s",
			     x->change_id, x->device, status_name(x->status), x->seen, idtxt);
	}
	return 0;
}

/* The merged state the workload implies. */
static void check_merge(struct vstate *vs, const merge_rec_t *rec, const struct expect *ex,
			size_t n, bool shared, const char *idtxt)
{
	if (shared) {
		/* Each device's last edit of field 140 stays live: nobody saw
		 * another device's edit. Distinct editors, acknowledged and
		 * possibly stored. */
		unsigned sure = 0, maybe = 0;
		for (size_t i = 0, j; i < n; i = j) { /* ex is sorted by device */
			bool acked = false, stored = false;
			for (j = i; j < n && ex[j].device == ex[i].device; j++) {
				if (ex[j].kind != LG_SHARED_EDIT)
					continue;
				acked |= lg_acked(ex[j].status);
				stored |= lg_acked(ex[j].status) || ex[j].seen > 0;
			}
			sure += acked;
			maybe += stored;
		}
		const merge_reg_t *reg = merge_register(rec, LG_FIELD_RISK);
		size_t live = merge_live_count(reg);
		/* Two devices may pick the same risk level: equal live values
		 * are no conflict (merge.h), whatever the seed. */
		bool differ = merge_in_conflict(reg);
		size_t lo = SH_MAX(sure, 1u), hi = SH_MAX(maybe, 1u);
		if (live < lo || live > hi)
			fail(vs, "shared record %s: field %u has %zu live values; %u devices "
				 "edited it from the same base, so %zu expected",
			     idtxt, LG_FIELD_RISK, live, sure, lo);
		if (differ != (rec->conflicts > 0))
			fail(vs, "shared record %s: %zu live values%s but the record counts %u "
				 "conflicts", idtxt, live, differ ? " that differ" : ", all equal,",
			     rec->conflicts);
		vs->v->expected_conflicted += sure >= 2 && differ;
		vs->v->conflicted += rec->conflicts > 0;
		return;
	}
	if (rec->conflicts)
		fail(vs, "record %s has %u open conflicts, but only its own device wrote it", idtxt,
		     rec->conflicts);
	int want = -1; /* the last deletion change's state, when it is certain */
	for (size_t i = 0; i < n; i++) {
		if (ex[i].kind != LG_DELETE && ex[i].kind != LG_UNDELETE)
			continue;
		if (ex[i].status == LG_IN_DOUBT)
			return;
		if (lg_acked(ex[i].status))
			want = ex[i].kind == LG_DELETE;
	}
	if (want >= 0 && merge_is_deleted(rec) != (want == 1))
		fail(vs, "record %s is %s, but its last deletion change said %s", idtxt,
		     merge_is_deleted(rec) ? "deleted" : "not deleted",
		     want ? "delete" : "undelete");
}

static int check_record(struct vstate *vs, struct store_txn *t, struct arena *a, size_t g,
			unsigned owner, const struct lg_record *lr)
{
	struct expect *ex = vs->exp + vs->first[g];
	size_t n = vs->first[g + 1] - vs->first[g];
	bool shared = owner == 0 && g < vs->run->n_shared;
	char idtxt[UUID_STR_LEN + 1];
	merge_rec_t *rec;
	uuid_fmt(lr->id, idtxt);
	int r = store_record_get(t, a, lr->id, &rec);
	if (r == -ENOENT) {
		for (size_t i = 0; i < n; i++)
			if (lg_acked(ex[i].status)) {
				fail(vs, "record %s is missing, though change %" PRIu64
					 " of device %016" PRIx64 " to it was acknowledged",
				     idtxt, ex[i].change_id, ex[i].device);
				break;
			}
		return 0;
	}
	if (r < 0)
		return r;
	vs->v->records++;
	if ((r = check_history(vs, t, a, rec, ex, n, idtxt)) < 0)
		return r;
	check_merge(vs, rec, ex, n, shared, idtxt);
	return 0;
}

/* Device 0 holds every shared record from its first batch on, so its feed
 * is exactly the other devices' acknowledged edits of them (and with
 * --groups, their adds of perpetrators to them). */
static void check_pull(struct vstate *vs)
{
	struct lg_run *run = vs->run;
	const struct lg_device *d0 = &run->dev[0];
	uint64_t want = 0;
	if (run->n_dev < 2 || !d0->pull_ok || run->o.tokens) /* old feeds */
		return;
	for (size_t k = 0; k < run->n_shared; k++)
		if (!lg_acked(d0->changes[k].status))
			return;
	for (unsigned i = 1; i < run->n_dev; i++)
		for (size_t k = 0; k < run->dev[i].n_changes; k++) {
			const struct lg_change *lc = &run->dev[i].changes[k];
			if (lc->kind != LG_SHARED_EDIT && lc->kind != LG_SHARED_ADD)
				continue;
			if (lc->status == LG_IN_DOUBT)
				return;
			want += lg_acked(lc->status);
		}
	if (d0->pulled != want)
		fail(vs, "device 0 pulled %" PRIu64 " changes; the other devices' "
			 "acknowledged edits of its shared records are %" PRIu64,
		     d0->pulled, want);
}

int lg_verify_store(struct lg_run *run, const char *dir)
{
	struct lg_verify *v = &run->v;
	struct vstate vs = {.run = run, .v = v};
	struct store_opts so = {.read_only = true};
	struct store *s = NULL;
	struct store_txn *t = NULL;
	struct arena *a = arena_new();
	char err[256];
	int r;

	v->ran = true;
	v->ok = false;
	if (!a || (r = group_changes(&vs)) < 0) {
		r = -ENOMEM;
		snprintf(v->why, sizeof(v->why), "out of memory");
		goto out;
	}
	if ((r = store_open(dir, &so, &s, err, sizeof(err))) < 0) {
		snprintf(v->why, sizeof(v->why), "%s", err);
		goto out;
	}
	size_t g = 0;
	for (unsigned i = 0; i < run->n_dev; i++) {
		const struct lg_device *d = &run->dev[i];
		for (size_t k = 0; k < d->n_recs; k++, g++) {
			if (!t && (r = store_begin(s, false, &t)) < 0)
				goto store_fail;
			arena_reset(a);
			if ((r = check_record(&vs, t, a, g, i, &d->recs[k])) < 0)
				goto store_fail;
			if (g % RECORDS_PER_TXN == RECORDS_PER_TXN - 1) {
				store_abort(t); /* short readers: the server is writing */
				t = NULL;
			}
		}
	}
	struct store_info info;
	if (!t && (r = store_begin(s, false, &t)) < 0)
		goto store_fail;
	if ((r = store_info(t, &info)) < 0)
		goto store_fail;
	v->log_after = info.log_entries;
	uint64_t added = v->log_after - v->log_before;
	if (added != vs.entries)
		fail(&vs, "the log grew by %" PRIu64 " entries during the run, but %" PRIu64
			  " belong to this run's records", added, vs.entries);
	uint64_t acked = 0;
	for (unsigned i = 0; i < run->n_dev; i++)
		for (size_t k = 0; k < run->dev[i].n_changes; k++)
			acked += lg_acked(run->dev[i].changes[k].status);
	if (vs.problems == 0 && v->changes != acked)
		fail(&vs, "%" PRIu64 " changes acknowledged, %" PRIu64 " found", acked, v->changes);
	if (v->conflicted != v->expected_conflicted && vs.problems == 0)
		fail(&vs, "%" PRIu64 " shared records have conflicts, %" PRIu64 " expected",
		     v->conflicted, v->expected_conflicted);
	check_pull(&vs);
	if (vs.problems > 1) {
		size_t l = strlen(v->why);
		snprintf(v->why + l, sizeof(v->why) - l, " (and %u more problems)",
			 vs.problems - 1);
	}
	v->ok = vs.problems == 0;
	r = 0;
	goto out;
store_fail:
	snprintf(v->why, sizeof(v->why), "cannot read the store in %s: %s", dir, sh_strerror(r));
out:
	store_abort(t);
	store_close(s);
	arena_free(a);
	free(vs.exp);
	free(vs.first);
	free(vs.rec_base);
	return r;
}
