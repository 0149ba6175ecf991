#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "render.h"
#include "form.h"
#include "wire.h"
#include "recpack.h"
#include "hlc.h"
#include "shahidi.pb-c.h"
#include "store.h"
#include "uuid.h"

#define STATUS_PAGE 20000 /* records per read transaction */

struct dev_row {
	uint64_t id;
	json_t *j;              /* borrowed from the devices array */
	uint64_t conflicts;
	uint64_t last_seen;
	char county[4];
	bool shown;
};

struct county_row {
	char code[4];
	uint64_t records, conflicts, devices, batches, applied, duplicates, rejected, unsent,
		waiting, last_push;
	json_t *silent;
};

struct form_county {
	const char *form_id;   /* owned by the registry */
	char county[4];
	uint64_t records, deleted;
};

struct acc {
	struct county_row counties[SCOPE_COUNTIES + 1]; /* [0]: no county */
	struct form_county *fc;
	size_t n_fc, cap_fc;
	struct dev_row *devs;
	size_t n_devs;
	uint64_t records, conflicts, deleted;
};

static struct county_row *county_row(struct acc *a, const char *code)
{
	int n = scope_county_number(code);
	if (n < 0)
		n = 0;
	struct county_row *r = &a->counties[n];
	if (!r->code[0] && n)
		snprintf(r->code, sizeof(r->code), "%s", code);
	return r;
}

static int add_fc(struct acc *a, const char *form_id, const char *county, bool deleted)
{
	for (size_t i = 0; i < a->n_fc; i++)
		if (a->fc[i].form_id == form_id && !strcmp(a->fc[i].county, county)) {
			a->fc[i].records++;
			a->fc[i].deleted += deleted;
			return 0;
		}
	if (a->n_fc == a->cap_fc) {
		size_t cap = a->cap_fc ? a->cap_fc * 2 : 64;
		struct form_county *p = realloc(a->fc, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		a->fc = p;
		a->cap_fc = cap;
	}
	struct form_county *f = &a->fc[a->n_fc++];
	f->form_id = form_id;
	snprintf(f->county, sizeof(f->county), "%s", county);
	f->records = 1;
	f->deleted = deleted;
	return 0;
}

static struct dev_row *find_dev(struct acc *a, uint64_t id)
{
	size_t lo = 0, hi = a->n_devs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (a->devs[mid].id == id)
			return &a->devs[mid];
		if (a->devs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static json_t *time_or_null(uint64_t ms)
{
	char buf[32];
	if (!ms)
		return json_null();
	render_time_ms(ms, buf);
	return json_string(buf);
}

/* Devices, in id order (the order of the dev table). */
static int collect_devices(struct store *s, const struct status_opts *o, struct acc *acc,
			   json_t *devices)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	int r;
	if (!a)
		return -ENOMEM;
	uint64_t *ids = NULL, *cursors = NULL, *waiting = NULL;
	size_t n = 0, cap = 0, i = 0;
	if ((r = store_begin(s, false, &t)) < 0)
		goto out;
	/* What each has yet to pull, counted for all at once (one walk of
	 * the wide table, not one per device) */
	uint64_t id = 0;
	store_device_t *d;
	while ((r = store_device_next(t, a, &id, &d)) == 1) {
		if (n == cap) {
			size_t more = cap ? 2 * cap : 64;
			uint64_t *ni = realloc(ids, more * sizeof(*ni));
			if (ni)
				ids = ni;
			uint64_t *nc = ni ? realloc(cursors, more * sizeof(*nc)) : NULL;
			if (!nc) {
				r = -ENOMEM;
				break;
			}
			cursors = nc;
			cap = more;
		}
		ids[n] = d->id;
		cursors[n++] = d->pull_cursor;
		arena_reset(a);
	}
	if (r == 0 && n && !(waiting = malloc(n * sizeof(*waiting))))
		r = -ENOMEM;
	if (r == 0 && n)
		r = store_feed_count_many(t, n, ids, cursors, waiting);
	id = 0;
	while (r >= 0 && (r = store_device_next(t, a, &id, &d)) == 1) {
		if (i == n || d->id != ids[i]) { /* the same transaction: the same devices */
			r = -EIO;
			break;
		}
		uint64_t waits = waiting[i++];
		struct dev_row *nd = realloc(acc->devs, (acc->n_devs + 1) * sizeof(*nd));
		if (!nd) {
			r = -ENOMEM;
			break;
		}
		acc->devs = nd;
		struct dev_row *row = &acc->devs[acc->n_devs++];
		memset(row, 0, sizeof(*row));
		row->id = d->id;
		snprintf(row->county, sizeof(row->county), "%s", d->county);
		row->last_seen = SH_MAX(d->last_push_ms, d->last_pull_ms);
		/* A coordinator without a county sees devices without one too. */
		row->shown = !o->scope.all ? (d->county[0] && scope_has(&o->scope, d->county)) : true;
		char hex[17];
		sh_device_fmt(d->id, hex);
		double silent = row->last_seen ? (double)(o->now_ms - SH_MIN(row->last_seen, o->now_ms)) / 86400000.0
					       : (double)(o->now_ms - SH_MIN(d->enrolled_ms, o->now_ms)) / 86400000.0;
		row->j = json_pack("{s:s,s:s,s:s,s:s,s:b,s:o,s:o,s:o,s:s,s:I,s:I,s:I,s:I,s:I,s:s,s:I,s:I,s:f,s:b}",
				   "id", hex, "name", d->name, "county", d->county, "role",
				   store_role_name(d->role), "revoked", d->revoked, "enrolled",
				   time_or_null(d->enrolled_ms), "last_push", time_or_null(d->last_push_ms),
				   "last_pull", time_or_null(d->last_pull_ms), "app_version",
				   d->app_version, "unsent", (json_int_t)d->unsent, "batches",
				   (json_int_t)d->batches, "changes_applied",
				   (json_int_t)d->changes_applied, "duplicates", (json_int_t)d->duplicates,
				   "rejected", (json_int_t)d->rejected, "last_rejection", d->last_reject,
				   "waiting_to_pull", (json_int_t)waits, "open_conflicts", (json_int_t)0,
				   "days_silent", silent,
				   "silent", d->role == ROLE_DEVICE && !d->revoked && silent > o->silent_days);
		if (!row->j) {
			r = -ENOMEM;
			break;
		}
		if (row->shown) {
			json_array_append(devices, row->j);
			if (d->role == ROLE_DEVICE) {
				struct county_row *c = county_row(acc, d->county);
				/* phones in service, as the page's Phones tile counts
				 * them; a revoked phone's past work still counts */
				c->devices += !d->revoked;
				c->batches += d->batches;
				c->applied += d->changes_applied;
				c->duplicates += d->duplicates;
				c->rejected += d->rejected;
				c->unsent += d->unsent;
				c->waiting += waits;
				c->last_push = SH_MAX(c->last_push, d->last_push_ms);
				if (!d->revoked && silent > o->silent_days) {
					if (!c->silent)
						c->silent = json_array();
					json_array_append_new(c->silent, json_string(hex));
				}
			}
		}
		json_decref(row->j); /* the array holds it, or nobody needs it */
		if (!row->shown)
			row->j = NULL;
		arena_reset(a);
	}
	store_abort(t);
out:
	free(ids);
	free(cursors);
	free(waiting);
	arena_free(a);
	return r < 0 ? r : 0;
}

/* A record as the page needs it, read in place (recpack_view(), and a
 * pointer record's change with wire_each_write()) rather than unpacked:
 * its county (the county field of any of the forms: which one counts is
 * known once the form is), whether it is deleted. Unpacking every record
 * was most of the page's time. */
struct rec_walk {
	const uint32_t *fields; /* the forms' county fields, fields[i] */
	size_t n_fields;
	const uint8_t **value;  /* value[i]: fields[i]'s, or NULL */
	size_t *len;
	bool deleted;
	const uint8_t *rec; /* an edited record's bytes, whose registers win */
	size_t rec_len;
};

static size_t walk_field(const struct rec_walk *w, uint32_t field)
{
	size_t i = 0;
	while (i < w->n_fields && w->fields[i] != field)
		i++;
	return i;
}

static bool walk_want(void *arg, uint32_t field)
{
	struct rec_walk *w = arg;
	return walk_field(w, field) < w->n_fields;
}

static int walk_write(void *arg, uint32_t field, const uint8_t *inst, const uint8_t *val,
		      size_t len)
{
	struct rec_walk *w = arg;
	size_t i = walk_field(w, field);
	if (!inst && i < w->n_fields) {
		w->value[i] = val;
		w->len[i] = len;
	}
	return 0;
}

/* A write of an edited record's first change, unless edited since. */
static int walk_base_write(void *arg, uint32_t field, const uint8_t *inst, const uint8_t *val,
			   size_t len)
{
	struct rec_walk *w = arg;
	/* only the fields the walk keeps are looked up in the record */
	if (inst || walk_field(w, field) == w->n_fields ||
	    recpack_holds(w->rec, w->rec_len, field, inst))
		return 0;
	return walk_write(arg, field, inst, val, len);
}

static int walk_value(void *arg, const struct recpack_value *v)
{
	struct rec_walk *w = arg;
	if (v->field == MERGE_DELETION_FIELD && !v->instance) {
		w->deleted = form_value_is_true(v->value, v->value_len);
		return 0;
	}
	return walk_write(arg, v->field, v->instance, v->value, v->value_len);
}

/* a holds a compressed change's bytes while the record is counted. */
static int count_record(const struct form_registry *forms, const struct status_opts *o,
			struct acc *acc, struct store_txn *t, struct arena *a, struct rec_walk *w,
			const uint8_t *p, size_t n)
{
	static const struct recpack_view_ops ops = {walk_want, walk_value};
	struct recpack_view rv;
	memset(w->value, 0, w->n_fields * sizeof(*w->value));
	w->deleted = false;
	int r = recpack_view(p, n, &ops, w, &rv);
	if (r < 0)
		return r == -EPROTO ? -EIO : r; /* our own bytes: corruption */
	/* a pointer record: the change that made it; an edited one: what it
	 * holds no register of in its first change */
	uint64_t from = rv.log_seq ? rv.log_seq : rv.base_log_seq;
	if (from) {
		const uint8_t *chg;
		size_t len;
		uint64_t pusher;
		w->rec = p;
		w->rec_len = n;
		if ((r = store_log_change(t, a, from, &chg, &len, &pusher)) < 0)
			return r == -ENOENT ? -EIO : r;
		if ((r = wire_each_write(chg, len, rv.log_seq ? walk_write : walk_base_write, w)) < 0)
			return r == -EPROTO ? -EIO : r;
	}
	char form_id[128] = ""; /* longer than any form's: none of them */
	if (rv.form_id && rv.form_id_len < sizeof(form_id)) {
		memcpy(form_id, rv.form_id, rv.form_id_len);
		form_id[rv.form_id_len] = 0;
	}
	const struct form *f = form_registry_find(forms, form_id, rv.form_version);
	char county[4] = "";
	size_t k = f && f->county_field ? walk_field(w, f->county_field->number) : w->n_fields;
	if (k < w->n_fields && w->value[k])
		render_county_of_value(w->value[k], w->len[k], county);
	if (!scope_has(&o->scope, county))
		return 0;
	const struct form *f1 = f ? f : form_registry_find(forms, form_id, 1);
	if ((r = add_fc(acc, f1 ? f1->form_id : "unknown", county, w->deleted)) < 0)
		return r;
	acc->records++;
	acc->deleted += w->deleted;
	struct county_row *c = county_row(acc, county);
	c->records++;
	if (rv.conflicts) {
		acc->conflicts++;
		c->conflicts++;
		for (size_t i = 0; i + 8 <= rv.writers_len; i += 8) {
			uint64_t id = 0; /* packed fixed64: little-endian */
			for (int b = 7; b >= 0; b--)
				id = (id << 8) | rv.writers[i + (size_t)b];
			struct dev_row *d = find_dev(acc, id);
			if (d)
				d->conflicts++;
		}
	}
	return 0;
}

static int collect_records(struct store *s, const struct form_registry *forms,
			   const struct status_opts *o, struct acc *acc)
{
	size_t nf = form_registry_count(forms), n_fields = 0;
	uint32_t *fields = calloc(nf + 1, sizeof(*fields));
	const uint8_t **value = calloc(nf + 1, sizeof(*value));
	size_t *len = calloc(nf + 1, sizeof(*len));
	struct arena *a = arena_new();
	int r = 0;
	if (!fields || !value || !len || !a) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nf; i++) {
		const struct form *f = form_registry_at(forms, i);
		struct rec_walk probe = {fields, n_fields, NULL, NULL, false};
		if (f->county_field && walk_field(&probe, f->county_field->number) == n_fields)
			fields[n_fields++] = f->county_field->number;
	}
	struct rec_walk w = {fields, n_fields, value, len, false};
	uint64_t seq = 0;
	bool done = false;
	while (!done && r >= 0) {
		struct store_txn *t;
		struct store_cursor *c = NULL;
		if ((r = store_begin(s, false, &t)) < 0)
			break;
		if ((r = store_records_cursor(t, seq, &c)) == 0) {
			for (int n = 0; n < STATUS_PAGE; n++) {
				const uint8_t *p;
				size_t len_p;
				r = store_cursor_next(c, &seq, &p, &len_p);
				if (r <= 0) {
					done = true;
					break;
				}
				arena_reset(a);
				if ((r = count_record(forms, o, acc, t, a, &w, p, len_p)) < 0)
					break;
			}
		}
		store_cursor_close(c);
		store_abort(t);
	}
out:
	arena_free(a);
	free(fields);
	free(value);
	free(len);
	return r < 0 ? r : 0;
}

int status_collect(struct store *s, const struct form_registry *forms,
		   const struct status_opts *o, json_t **ret)
{
	struct acc acc = {0};
	json_t *devices = json_array();
	json_t *root = NULL;
	const struct form *any = form_registry_at(forms, 0);
	int r = -ENOMEM;
	if (!devices)
		goto out;
	if ((r = collect_devices(s, o, &acc, devices)) < 0 ||
	    (r = collect_records(s, forms, o, &acc)) < 0)
		goto out;
	for (size_t i = 0; i < acc.n_devs; i++)
		if (acc.devs[i].j)
			json_object_set_new(acc.devs[i].j, "open_conflicts",
					    json_integer((json_int_t)acc.devs[i].conflicts));

	json_t *counties = json_array();
	enum { NONE = SCOPE_COUNTIES + 1 };
	for (int i = 1; i <= NONE; i++) {
		/* the row of records without a county (i == NONE) comes last */
		struct county_row *c = &acc.counties[i % NONE];
		if (!c->code[0] && i < NONE && o->all_counties) {
			snprintf(c->code, sizeof(c->code), "%03d", i);
			if (!scope_has(&o->scope, c->code))
				c->code[0] = 0;
		}
		if (!c->code[0] && !(i == NONE && c->records))
			continue;
		json_array_append_new(
			counties,
			json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "county",
				  c->code, "name", c->code[0] ? render_county_name(any, c->code) : "no county",
				  "devices",
				  (json_int_t)c->devices, "records", (json_int_t)c->records,
				  "open_conflicts", (json_int_t)c->conflicts, "batches",
				  (json_int_t)c->batches, "changes_applied", (json_int_t)c->applied,
				  "duplicates", (json_int_t)c->duplicates, "rejected",
				  (json_int_t)c->rejected, "unsent", (json_int_t)c->unsent,
				  "waiting_to_pull", (json_int_t)c->waiting, "last_push",
				  time_or_null(c->last_push), "silent_devices",
				  c->silent ? c->silent : json_array()));
		c->silent = NULL;
	}
	json_t *by_form = json_array();
	for (size_t i = 0; i < acc.n_fc; i++)
		json_array_append_new(by_form,
				      json_pack("{s:s,s:s,s:s,s:I,s:I}", "form_id", acc.fc[i].form_id,
						"county", acc.fc[i].county, "county_name",
						render_county_name(any, acc.fc[i].county), "records",
						(json_int_t)acc.fc[i].records, "deleted",
						(json_int_t)acc.fc[i].deleted));
	json_t *server = json_pack("{s:I,s:I,s:I,s:o}", "records", (json_int_t)acc.records,
				   "deleted", (json_int_t)acc.deleted, "open_conflicts",
				   (json_int_t)acc.conflicts, "records_by_form_and_county", by_form);
	if (o->scope.all) {
		/* Store-wide figures: for those who see every county. */
		struct store_txn *t;
		struct store_info info;
		if ((r = store_begin(s, false, &t)) < 0)
			goto out;
		r = store_info(t, &info);
		store_abort(t);
		if (r < 0)
			goto out;
		json_object_set_new(server, "log_entries", json_integer((json_int_t)info.log_entries));
		json_object_set_new(server, "store_bytes", json_integer((json_int_t)info.file_size));
		json_object_set_new(server, "map_bytes", json_integer((json_int_t)info.map_size));
		json_object_set_new(server, "map_used_bytes", json_integer((json_int_t)info.map_used));
		json_object_set_new(server, "map_use",
				    json_real(info.map_size ? (double)info.map_used / (double)info.map_size : 0));
	}
	json_t *scope = json_array();
	char codes[SCOPE_COUNTIES][4];
	size_t n_codes = scope_codes(&o->scope, codes, NULL);
	for (size_t i = 0; i < n_codes; i++)
		json_array_append_new(scope, json_string(codes[i]));
	char now[32];
	render_time_ms(o->now_ms, now);
	root = json_pack("{s:s,s:o,s:f,s:o,s:o,s:o}", "generated", now, "scope", scope,
			 "silent_after_days", o->silent_days, "server", server, "counties", counties,
			 "devices", devices);
	devices = NULL;
	r = root ? 0 : -ENOMEM;
out:
	for (int i = 0; i <= SCOPE_COUNTIES; i++)
		json_decref(acc.counties[i].silent);
	json_decref(devices);
	free(acc.devs);
	free(acc.fc);
	if (r == 0)
		*ret = root;
	return r;
}

/* Adds code (3 characters) to the comma-separated list out, once. */
static void add_county(char *out, size_t len, const uint8_t *code, size_t n)
{
	if (!out || n != 3)
		return;
	for (const char *p = out; *p; p += p[3] ? 4 : 3)
		if (!memcmp(p, code, 3))
			return;
	size_t at = strlen(out);
	if (at + (at ? 4 : 3) + 1 > len)
		return;
	if (at)
		out[at++] = ',';
	memcpy(out + at, code, 3);
	out[at + 3] = 0;
}

/* Is a value of field number n (of form f, may be NULL) withheld from a
 * reader without include_sensitive? A field the form marks sensitive, and
 * one it does not list (a newer form's: it may be), as files_get.c does;
 * not field 0, an instance's removal flag. */
static bool status__withheld(const struct form *f, uint32_t n, bool include_sensitive)
{
	const struct form_field *fd = f ? form_field(f, n) : NULL;
	return !include_sensitive && n && (!fd || fd->sensitive);
}

int status_history(struct store *s, const struct form_registry *forms, const uint8_t id[16],
		   bool include_sensitive, json_t **ret, char *ret_counties, size_t counties_len)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	merge_rec_t *rec;
	json_t *entries = NULL;
	int r;
	if (!a)
		return -ENOMEM;
	if ((r = store_begin(s, false, &t)) < 0)
		goto out_arena;
	if ((r = store_record_get(t, a, id, &rec)) < 0)
		goto out;
	const struct form *f = form_registry_find(forms, rec->form_id, rec->form_version);
	if (ret_counties) {
		char cur[4] = "";
		ret_counties[0] = 0;
		render_record_county(rec, f, cur);
		add_county(ret_counties, counties_len, (const uint8_t *)cur, strlen(cur));
	}
	entries = json_array();
	uint64_t *hist;
	size_t n_hist = 0;
	struct buf text = {0};
	if ((r = store_record_history(t, a, rec, &hist, &n_hist)) < 0)
		goto out;
	for (size_t h = 0; h < n_hist; h++) {
		uint64_t log_seq = hist[h];
		store_log_t *e;
		if ((r = store_log_get(t, a, log_seq, &e)) < 0)
			break;
		Shahidi__V1__Change *ch = shahidi__v1__change__unpack(arena_pb_allocator(a),
								       e->change.len, e->change.data);
		char when[32], dev[17], origin[17], stamp[48] = "", stored[48] = "", hash[65] = "";
		render_time_ms(e->received_ms, when);
		sh_device_fmt(e->device, dev);
		sh_device_fmt(ch && ch->origin ? ch->origin : e->device, origin);
		if (ch)
			hlc_fmt(ch->hlc, stamp, sizeof(stamp));
		if (e->stored_hlc)
			hlc_fmt(e->stored_hlc, stored, sizeof(stored));
		if (e->hash.len == 32)
			sh_hex(e->hash.data, 32, hash);
		json_t *fields = json_array();
		const struct form *cf = ch ? form_registry_find(forms, ch->form_id, ch->form_version) : NULL;
		for (size_t i = 0; ch && i < ch->n_fields; i++) {
			const Shahidi__V1__FieldWrite *fw = ch->fields[i];
			const struct form_field *fd = cf ? form_field(cf, fw->field) : NULL;
			bool withheld = status__withheld(cf, fw->field, include_sensitive);
			buf_reset(&text);
			if (fw->value && !withheld) {
				size_t n = shahidi__v1__value__get_packed_size(fw->value);
				uint8_t *p = arena_alloc(a, n + 1);
				if (p) {
					shahidi__v1__value__pack(fw->value, p);
					render_value_text(fd, p, n, true, &text);
				}
			}
			if (cf && cf->county_field && fw->field == cf->county_field->number && fw->value &&
			    fw->value->kind_case == SHAHIDI__V1__VALUE__KIND_CHOICE)
				add_county(ret_counties, counties_len, (const uint8_t *)fw->value->choice,
					   strlen(fw->value->choice));
			json_t *fj = json_pack("{s:i,s:s,s:s,s:s#,s:i}", "field", (int)fw->field, "name",
					       fd ? fd->name : "", "label",
					       fd && fd->label ? fd->label : "", "value",
					       text.data ? (char *)text.data : "", (int)text.len,
					       "supersedes", (int)fw->n_supersedes);
			if (fj && withheld) {
				/* the write stays in the trail, its value does not */
				json_object_del(fj, "value");
				json_object_set_new(fj, "withheld", json_string("sensitive"));
			}
			if (fj && fw->instance.len == 16) {
				/* a repeat-group instance's: named group[ID].field, and
				 * field 0 is its removal */
				const struct form_group *g =
					fd && fd->group ? fd->group
							: render_instance_group(rec, f, fw->instance.data);
				char iid[UUID_STR_LEN + 1], path[160];
				uuid_fmt(fw->instance.data, iid);
				snprintf(path, sizeof(path), "%s[%s]%s%s", g ? g->name : "instance", iid,
					 fw->field ? "." : "", fw->field ? (fd ? fd->name : "?") : "");
				json_object_set_new(fj, "name", json_string(path));
				json_object_set_new(fj, "instance_id", json_string(iid));
				json_object_set_new(fj, "group", json_string(g ? g->name : "instance"));
				json_object_set_new(fj, "group_label",
						    json_string(g && g->label ? g->label : "Instance"));
				if (!fw->field)
					json_object_set_new(fj, "value",
							    json_string(fw->value && fw->value->kind_case ==
									SHAHIDI__V1__VALUE__KIND_BOOLEAN &&
									fw->value->boolean ? "removed"
											   : "restored"));
			}
			json_array_append_new(fields, fj);
		}
		json_t *j = json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:o}", "log_seq",
				      (json_int_t)log_seq, "received", when, "pushed_by", dev, "origin",
				      origin, "batch_seq", (json_int_t)e->batch_seq, "change_id",
				      (json_int_t)(ch ? ch->change_id : 0), "stamp", stamp,
				      "stored_stamp", stored, "hash", hash, "fields", fields);
		if (ch && ch->deletion)
			json_object_set_new(j, "deleted", json_boolean(ch->deletion->deleted));
		if (e->erased || (ch && ch->erased))
			json_object_set_new(j, "erased", json_true());
		json_array_append_new(entries, j);
	}
	buf_free(&text);
	if (r == 0) {
		char rid[UUID_STR_LEN + 1];
		uuid_fmt(id, rid);
		*ret = json_pack("{s:s,s:s,s:I,s:o}", "record_id", rid, "form_id", rec->form_id,
				 "changes", (json_int_t)json_array_size(entries), "history", entries);
		entries = NULL;
	}
out:
	json_decref(entries);
	store_abort(t);
out_arena:
	arena_free(a);
	return r;
}

/* Takes the values out of a sensitive field's conflicts (o: a record as
 * render_record_json shows it). */
static void status__withhold_conflicts(json_t *o, const struct form *f)
{
	size_t i, k;
	json_t *c, *v;
	json_array_foreach(json_object_get(o, "conflicts"), i, c) {
		json_t *vals = json_object_get(c, "values");
		json_int_t n = json_integer_value(json_object_get(c, "number"));
		if (!json_is_array(vals) || n < 1 || n > UINT32_MAX ||
		    !status__withheld(f, (uint32_t)n, false))
			continue;
		json_object_set_new(c, "withheld", json_string("sensitive"));
		json_array_foreach(vals, k, v) {
			json_object_del(v, "value");
			json_object_del(v, "text");
			json_object_set_new(v, "withheld", json_string("sensitive"));
		}
	}
}

int status_conflicts(struct store *s, const struct form_registry *forms,
		     const struct scope *scope, bool include_sensitive, json_t **ret)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	json_t *arr = json_array();
	uint64_t seq = 0;
	merge_rec_t *rec;
	int r = -ENOMEM;
	if (!a || !arr || (r = store_begin(s, false, &t)) < 0)
		goto out;
	/* Open conflicts are few; the list is capped all the same. */
	while (json_array_size(arr) < STATUS_CONFLICTS_MAX &&
	       (r = store_conflict_next(t, a, &seq, &rec)) == 1) {
		const struct form *f = form_registry_find(forms, rec->form_id, rec->form_version);
		char county[4];
		if (scope_has_record(scope, rec, f, county)) {
			/* Only the values in conflict: resolving them is the
			 * coordinator's work; the rest of the report is not needed. */
			json_t *o = render_record_json(rec, f, true);
			if (!o) {
				r = -ENOMEM;
				break;
			}
			if (!include_sensitive)
				status__withhold_conflicts(o, f);
			json_object_set_new(o, "county", json_string(county));
			json_array_append_new(arr, o);
		}
		arena_reset(a);
	}
	store_abort(t);
	if (r >= 0) {
		json_t *j = json_pack("{s:I,s:o}", "open_conflicts", (json_int_t)json_array_size(arr),
				      "records", arr);
		arr = NULL;
		if (!j)
			r = -ENOMEM;
		else
			*ret = j;
	}
out:
	json_decref(arr);
	arena_free(a);
	return r < 0 ? r : 0;
}
