#include "office_api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "audit.h"
#include "buf.h"
#include "common.h"
#include "render.h"
#include "store.h"
#include "uuid.h"

__attribute__((format(printf, 4, 5))) static int refuse(struct office_verdict *v, int err,
							 const char *code, const char *fmt, ...)
{
	va_list ap;
	snprintf(v->code, sizeof(v->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
	va_end(ap);
	return err;
}

static void actor_name(uint64_t device, char buf[64])
{
	char hex[17];
	sh_device_fmt(device, hex);
	snprintf(buf, 64, "device:%s", hex);
}

int office_api_actor_device(struct store_txn *t, uint64_t device, struct office_actor *ret)
{
	struct arena *a = arena_new();
	store_device_t *d;
	if (!a)
		return -ENOMEM;
	int r = store_device_get(t, a, device, &d);
	if (r == 0 && (d->revoked || (d->role != ROLE_COORDINATOR && d->role != ROLE_ADMIN)))
		r = -EPERM;
	if (r == 0) {
		ret->device = device;
		ret->scope = scope_of_device(d);
		actor_name(device, ret->name);
	}
	arena_free(a);
	return r;
}

void office_api_actor_cli(struct office_actor *ret)
{
	ret->device = 0;
	ret->scope = scope_of_cli();
	audit_cli_actor(ret->name);
}

/* The record, if the actor may see it: 0 with *ret_form (may be NULL:
 * its form is not loaded), -ENOENT otherwise. */
static int record_form(struct store_txn *t, const struct form_registry *forms,
		       const struct office_actor *actor, const uint8_t id[16],
		       const struct form **ret_form)
{
	struct arena *a = arena_new();
	merge_rec_t *rec;
	if (!a)
		return -ENOMEM;
	int r = store_record_get(t, a, id, &rec);
	if (r == 0) {
		const struct form *f = form_registry_find(forms, rec->form_id, rec->form_version);
		if (!scope_has_record(&actor->scope, rec, f, NULL))
			r = -ENOENT;
		else
			*ret_form = f;
	}
	arena_free(a);
	return r;
}

int office_api_resolve(struct store_txn *t, const struct form_registry *forms,
		       const struct office_actor *actor, const struct office_resolve *q,
		       uint64_t now_ms, uint64_t *ret_log_seq, struct office_verdict *v)
{
	const struct form *f = NULL;
	struct resolve_req rq = {.record_id = q->record_id, .how = q->how};
	struct buf value = {0};
	char rid[UUID_STR_LEN + 1];
	int r = record_form(t, forms, actor, q->record_id, &f);
	if (r == -ENOENT)
		return refuse(v, r, "no_such_record", "no such record");
	if (r < 0)
		return r;
	uuid_fmt(q->record_id, rid);
	json_t *details = json_pack("{s:s}", "record_id", rid);
	if (!details)
		return -ENOMEM;
	if (q->instance) {
		char iid[UUID_STR_LEN + 1];
		uuid_fmt(q->instance, iid);
		rq.instance = q->instance;
		json_object_set_new(details, "instance", json_string(iid));
	}
	if (q->how == RESOLVE_DELETED) {
		rq.deleted = q->deleted;
		json_object_set_new(details, "how", json_string("deleted"));
		json_object_set_new(details, "deleted", json_boolean(q->deleted));
	} else {
		/* the field, by name or number, in the record's form */
		const struct form_field *fd = NULL;
		for (size_t i = 0; f && i < f->n_fields && !fd; i++)
			if ((q->field_name && !strcmp(f->fields[i].name, q->field_name)) ||
			    (q->field_number && f->fields[i].number == q->field_number))
				fd = &f->fields[i];
		if (!fd) {
			r = refuse(v, -EINVAL, "unknown_field",
				   "field must name a field of the record's form");
			goto out;
		}
		/* Its values are withheld from a scope that may not see them
		 * (scope.h): it may not choose or write one either. */
		if (fd->sensitive && !actor->scope.sensitive) {
			r = refuse(v, -EPERM, "sensitive_field_admin_only",
				   "%s is a sensitive field: only an admin resolves its conflicts",
				   fd->name);
			goto out;
		}
		rq.field = fd->number;
		json_object_set_new(details, "field", json_string(fd->name));
		if (q->how == RESOLVE_TAKE) {
			char hex[17];
			rq.take_device = q->take_device;
			sh_device_fmt(q->take_device, hex);
			json_object_set_new(details, "how", json_string("take"));
			json_object_set_new(details, "take", json_string(hex));
		} else {
			char err[200];
			if (render_value_encode(fd, q->value, &value, err, sizeof(err)) < 0) {
				r = refuse(v, -EINVAL, "wrong_type", "%s", err);
				goto out;
			}
			rq.value = value.data;
			rq.value_len = value.len;
			json_object_set_new(details, "how", json_string("value"));
		}
	}
	struct form_verdict fv = {{0}};
	uint64_t log_seq;
	r = resolve_apply(t, forms, actor->device, &rq, now_ms, &fv, &log_seq);
	if (r == -EINVAL) {
		r = refuse(v, strcmp(fv.code, "no_conflict") ? -EINVAL : -EALREADY, "cannot_resolve",
			   "%s: %s", fv.code, fv.reason);
		goto out;
	}
	if (r == -ENOENT) {
		r = refuse(v, r, "no_such_record", "no such record");
		goto out;
	}
	if (r < 0)
		goto out;
	json_object_set_new(details, "log_seq", json_integer((json_int_t)log_seq));
	r = audit_record_txn(t, actor->name, "resolve", details);
	details = NULL; /* stolen */
	if (r == 0)
		*ret_log_seq = log_seq;
out:
	json_decref(details);
	buf_free(&value);
	return r;
}

int office_api_assign(struct store_txn *t, const struct form_registry *forms,
		      const struct office_actor *actor, const uint8_t record_id[16],
		      uint64_t device, struct office_verdict *v)
{
	const struct form *f;
	struct arena *a;
	store_device_t *d;
	int r = record_form(t, forms, actor, record_id, &f);
	if (r == -ENOENT)
		return refuse(v, r, "no_such_record", "no such record");
	if (r < 0)
		return r;
	if (!(a = arena_new()))
		return -ENOMEM;
	r = store_device_get(t, a, device, &d);
	bool ok = r == 0 && !d->revoked && d->role == ROLE_DEVICE && scope_has(&actor->scope, d->county);
	if (r == 0 || r == -ENOENT)
		r = ok ? store_assign(t, a, record_id, device) : 0;
	arena_free(a);
	if (r < 0)
		return r;
	if (!ok)
		return refuse(v, -ENOENT, "no_such_device", "no such device in your counties");
	char rid[UUID_STR_LEN + 1], hex[17];
	uuid_fmt(record_id, rid);
	sh_device_fmt(device, hex);
	return audit_record_txn(t, actor->name, "assign",
				json_pack("{s:s,s:s}", "record_id", rid, "device", hex));
}

int office_api_enrol(struct store_txn *t, const struct office_actor *actor,
		     const struct auth_enrol *e, uint64_t now_ms, uint64_t *ret_id, char *token,
		     struct office_verdict *v)
{
	char err[200], hex[17];
	uint64_t id;
	int r = auth_enrol(t, e, now_ms, &id, token, err, sizeof(err));
	if (r == -EINVAL)
		return refuse(v, r, "bad_request", "%s", err);
	if (r < 0)
		return r;
	sh_device_fmt(id, hex);
	r = audit_record_txn(t, actor->name, "enrol",
			     json_pack("{s:s,s:s,s:s,s:s,s:b}", "device", hex, "name", e->name, "role",
				       store_role_name(e->role), "county",
				       e->county ? e->county : "", "qr", e->qr));
	if (r == 0)
		*ret_id = id;
	return r;
}

int office_api_revoke(struct store_txn *t, const struct office_actor *actor, uint64_t device,
		      uint64_t now_ms, struct office_verdict *v)
{
	char hex[17];
	int r = auth_revoke(t, device, now_ms);
	if (r == -ENOENT)
		return refuse(v, r, "no_such_device", "no such device");
	if (r < 0)
		return r;
	sh_device_fmt(device, hex);
	return audit_record_txn(t, actor->name, "revoke", json_pack("{s:s}", "device", hex));
}

json_t *office_api_export_start_entry(const char *id, const struct export_opts *o)
{
	json_t *cj = json_array();
	for (size_t i = 0; cj && i < o->n_counties; i++)
		json_array_append_new(cj, json_string(o->counties[i]));
	return json_pack("{s:s,s:s,s:s,s:o,s:I,s:b,s:b}", "export_id", id, "format",
			 export_format_name(o->format), "form",
			 o->form_id ? o->form_id : "incident_report", "counties", cj, "since_ms",
			 (json_int_t)o->since_ms, "include_deleted", o->include_deleted,
			 "include_sensitive", o->include_sensitive);
}

json_t *office_api_export_end_entry(const char *id, uint64_t records, const char *outcome)
{
	return json_pack("{s:s,s:I,s:s}", "export_id", id, "records", (json_int_t)records,
			 "outcome", outcome);
}

int office_api_export_audit(struct store_txn *t, const struct office_actor *actor, bool end,
			    json_t *entry)
{
	json_incref(entry); /* audit_record_txn steals it; the writer may run this again */
	return audit_record_txn(t, actor->name, end ? "export_end" : "export", entry);
}
