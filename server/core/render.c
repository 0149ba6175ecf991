#include "render.h"

#include <sodium.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "hlc.h"
#include "shahidi.pb-c.h"
#include "uuid.h"

void render_time_ms(uint64_t ms, char buf[32])
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char date[24];
	if (!gmtime_r(&s, &tm) || !strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(buf, 32, "?");
		return;
	}
	snprintf(buf, 32, "%s.%03uZ", date, (unsigned)(ms % 1000));
}

static const char *choice_text(const struct form_field *fd, const uint8_t *code, size_t len,
			       bool labels)
{
	const struct form_choice *c = fd ? form_choice(fd, (const char *)code, len) : NULL;
	if (c)
		return labels ? c->label : c->code;
	return NULL;
}

int render_value_text(const struct form_field *fd, const uint8_t *v, size_t n, bool labels,
		      struct buf *out)
{
	struct form_value fv;
	char tmp[128];
	int r = 0;
	if (form_value_parse(v, n, &fv) < 0)
		return buf_puts(out, "[malformed]");
	switch (fv.kind) {
	case FT_NONE:
		return 0;
	case FT_TEXT:
	case FT_DATE:
		return buf_append(out, fv.str, fv.str_len);
	case FT_CHOICE: {
		const char *t = choice_text(fd, fv.str, fv.str_len, labels);
		return t ? buf_puts(out, t) : buf_append(out, fv.str, fv.str_len);
	}
	case FT_CHOICES: {
		size_t pos = 0, len, k = 0;
		const uint8_t *code;
		while ((r = form_value_next_choice(&fv, &pos, &code, &len)) > 0) {
			const char *t = choice_text(fd, code, len, labels);
			if ((k++ && (r = buf_puts(out, "; ")) < 0) ||
			    (r = t ? buf_puts(out, t) : buf_append(out, code, len)) < 0)
				return r;
		}
		return r;
	}
	case FT_INTEGER:
		snprintf(tmp, sizeof(tmp), "%lld", (long long)fv.i);
		break;
	case FT_DECIMAL:
		snprintf(tmp, sizeof(tmp), "%.17g", fv.d);
		break;
	case FT_BOOLEAN:
		snprintf(tmp, sizeof(tmp), "%s", fv.b ? "yes" : "no");
		break;
	case FT_DATETIME:
		render_time_ms((uint64_t)fv.i, tmp);
		break;
	case FT_GEOPOINT: {
		struct form_geopoint g;
		if (form_value_geopoint(&fv, &g) < 0)
			return buf_puts(out, "[malformed]");
		snprintf(tmp, sizeof(tmp), "%.6f,%.6f", g.latitude, g.longitude);
		break;
	}
	case FT_ATTACHMENT: {
		Shahidi__V1__Attachment *a = shahidi__v1__attachment__unpack(NULL, fv.sub_len, fv.sub);
		if (!a)
			return buf_puts(out, "[malformed]");
		char hex[65] = "";
		if (a->sha256.len == 32)
			sh_hex(a->sha256.data, 32, hex);
		r = buf_printf(out, "sha256:%s (%llu bytes, %s)", hex, (unsigned long long)a->size,
			       a->media_type);
		shahidi__v1__attachment__free_unpacked(a, NULL);
		return r;
	}
	case FT_SEALED:
		snprintf(tmp, sizeof(tmp), "[sealed, %zu bytes]", fv.sub_len);
		break;
	case FT_LINK:
		if (fv.str_len != 16)
			return buf_puts(out, "[malformed]");
		uuid_fmt(fv.str, tmp);
		break;
	}
	return buf_puts(out, tmp);
}

json_t *render_value_json(const struct form_field *fd, const uint8_t *v, size_t n)
{
	struct form_value fv;
	if (form_value_parse(v, n, &fv) < 0)
		return NULL;
	switch (fv.kind) {
	case FT_NONE:
		return json_null();
	case FT_TEXT:
	case FT_DATE:
	case FT_CHOICE:
		return json_stringn((const char *)fv.str, fv.str_len);
	case FT_LINK: {
		char id[UUID_STR_LEN + 1];
		if (fv.str_len != 16)
			return NULL;
		uuid_fmt(fv.str, id);
		return json_string(id);
	}
	case FT_INTEGER:
		return json_integer(fv.i);
	case FT_DECIMAL:
		return json_real(fv.d);
	case FT_BOOLEAN:
		return json_boolean(fv.b);
	case FT_DATETIME: {
		char tmp[32];
		render_time_ms((uint64_t)fv.i, tmp);
		return json_string(tmp);
	}
	case FT_CHOICES: {
		json_t *arr = json_array();
		size_t pos = 0, len;
		const uint8_t *code;
		int r;
		while (arr && (r = form_value_next_choice(&fv, &pos, &code, &len)) > 0)
			json_array_append_new(arr, json_stringn((const char *)code, len));
		return arr;
	}
	case FT_GEOPOINT: {
		struct form_geopoint g;
		if (form_value_geopoint(&fv, &g) < 0)
			return NULL;
		return json_pack("{s:f,s:f,s:f,s:f}", "latitude", g.latitude, "longitude",
				 g.longitude, "altitude", g.altitude, "accuracy", g.accuracy);
	}
	case FT_ATTACHMENT: {
		Shahidi__V1__Attachment *a = shahidi__v1__attachment__unpack(NULL, fv.sub_len, fv.sub);
		if (!a)
			return NULL;
		char hex[65] = "", id[UUID_STR_LEN + 1] = "";
		if (a->sha256.len == 32)
			sh_hex(a->sha256.data, 32, hex);
		if (a->file_id.len == 16)
			uuid_fmt(a->file_id.data, id);
		json_t *j = json_pack("{s:s,s:s,s:I,s:s}", "file_id", id, "sha256", hex, "size",
				      (json_int_t)a->size, "media_type", a->media_type);
		shahidi__v1__attachment__free_unpacked(a, NULL);
		return j;
	}
	case FT_SEALED: {
		size_t blen = sodium_base64_ENCODED_LEN(fv.sub_len, sodium_base64_VARIANT_ORIGINAL);
		char *b64 = malloc(blen);
		if (!b64)
			return NULL;
		sodium_bin2base64(b64, blen, fv.sub, fv.sub_len, sodium_base64_VARIANT_ORIGINAL);
		json_t *j = json_pack("{s:s}", "sealed", b64);
		free(b64);
		return j;
	}
	}
	(void)fd;
	return NULL;
}

/* with_text: also "text", the value as people read it (choice labels). */
static json_t *entry_json(const struct form_field *fd, const merge_entry_t *e, bool with_text)
{
	char dev[17], stamp[48];
	sh_device_fmt(e->device, dev);
	hlc_fmt(e->hlc, stamp, sizeof(stamp));
	json_t *v = render_value_json(fd, e->value.data, e->value.len);
	char hlc[24];
	/* as a string: JSON numbers lose precision above 2^53 in JavaScript */
	snprintf(hlc, sizeof(hlc), "%llu", (unsigned long long)e->hlc);
	json_t *j = json_pack("{s:o,s:s,s:s,s:s}", "value", v ? v : json_null(), "device", dev,
			      "stamp", stamp, "hlc", hlc);
	if (j && with_text) {
		struct buf b = {0};
		if (render_value_text(fd, e->value.data, e->value.len, true, &b) == 0)
			json_object_set_new(j, "text", json_stringn(b.len ? (const char *)b.data : "", b.len));
		buf_free(&b);
	}
	return j;
}

const struct form_group *render_instance_group(const merge_rec_t *rec, const struct form *f,
					      const uint8_t id[16])
{
	for (size_t i = 0; f && i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		const struct form_field *fd;
		if (merge_reg_in_instance(reg) && reg->field && !memcmp(reg->instance.data, id, 16) &&
		    (fd = form_field(f, reg->field)) && fd->group)
			return fd->group;
	}
	return NULL;
}

void render_instance_id(const uint8_t id[16], bool short_id, char *out, size_t n)
{
	char full[UUID_STR_LEN + 1];
	uuid_fmt(id, full);
	if (short_id) /* a v7 id starts with its time: its end tells apart */
		snprintf(out, n, "%.8s\u2026%s", full, full + UUID_STR_LEN - 4);
	else
		snprintf(out, n, "%s", full);
}

void render_reg_path(const merge_rec_t *rec, const struct form *f, const merge_reg_t *reg,
		     bool short_id, char *out, size_t n)
{
	const struct form_field *fd = f && reg->field ? form_field(f, reg->field) : NULL;
	char fname[48], iid[UUID_STR_LEN + 1];
	if (fd)
		snprintf(fname, sizeof(fname), "%s", fd->name);
	else
		snprintf(fname, sizeof(fname), "field_%u", reg->field);
	if (!merge_reg_in_instance(reg)) {
		snprintf(out, n, "%s", fname);
		return;
	}
	const struct form_group *g = render_instance_group(rec, f, reg->instance.data);
	render_instance_id(reg->instance.data, short_id, iid, sizeof(iid));
	if (reg->field)
		snprintf(out, n, "%s[%s].%s", g ? g->name : "instance", iid, fname);
	else
		snprintf(out, n, "%s[%s]", g ? g->name : "instance", iid);
}

/* The object of instance id under its group's name in groups, made when
 * missing. Registers come sorted by instance: it is the array's last. */
static json_t *instance_obj(json_t *groups, const merge_rec_t *rec, const char *gname,
			    const uint8_t id[16])
{
	char iid[UUID_STR_LEN + 1];
	uuid_fmt(id, iid);
	json_t *arr = json_object_get(groups, gname);
	if (!arr) {
		arr = json_array();
		json_object_set_new(groups, gname, arr);
	}
	json_t *last = json_array_get(arr, json_array_size(arr) - 1);
	if (last && !strcmp(json_string_value(json_object_get(last, "instance_id")), iid))
		return json_object_get(last, "fields");
	json_t *fields = json_object();
	json_array_append_new(arr, json_pack("{s:s,s:b,s:o}", "instance_id", iid, "removed",
					     merge_instance_removed(rec, id), "fields", fields));
	return fields;
}

bool render_instance_linked(const merge_rec_t *rec, const uint8_t id[16])
{
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		for (size_t k = 0; reg->field && k < reg->n_entries; k++) {
			const merge_entry_t *e = reg->entries[k];
			struct form_value v;
			if (!e->dead && !e->pending &&
			    form_value_parse(e->value.data, e->value.len, &v) == 0 &&
			    v.kind == FT_LINK && v.str_len == 16 && !memcmp(v.str, id, 16))
				return true;
		}
	}
	return false;
}

/* What an instance's register adds to a conflict: its group and instance. */
static void conflict_instance(json_t *c, const merge_rec_t *rec, const struct form *f,
			      const merge_reg_t *reg, const struct form_field *fd)
{
	const struct form_group *g = render_instance_group(rec, f, reg->instance.data);
	char iid[UUID_STR_LEN + 1], path[160], label[400];
	uuid_fmt(reg->instance.data, iid);
	render_reg_path(rec, f, reg, false, path, sizeof(path));
	snprintf(label, sizeof(label), "%s: %s", g && g->label ? g->label : "Instance",
		 fd && fd->label ? fd->label : "removed");
	json_object_set_new(c, "group", json_string(g ? g->name : "instance"));
	json_object_set_new(c, "group_label", json_string(g && g->label ? g->label : "Instance"));
	json_object_set_new(c, "instance_id", json_string(iid));
	json_object_set_new(c, "path", json_string(path));
	json_object_set_new(c, "label", json_string(label));
}

json_t *render_record_json(const merge_rec_t *rec, const struct form *f, bool conflicts_only)
{
	char id[UUID_STR_LEN + 1], t1[32], t2[32];
	uuid_fmt(rec->record_id.data, id);
	render_time_ms(rec->first_received_ms, t1);
	render_time_ms(rec->last_changed_ms, t2);
	json_t *devices = json_array(), *fields = json_object(), *conflicts = json_array();
	json_t *groups = json_object();
	json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:s,s:I,s:b,s:i,s:o,s:o,s:o}", "record_id", id,
			      "form_id", rec->form_id, "form_version", (int)rec->form_version,
			      "first_received", t1, "last_changed", t2, "changes",
			      (json_int_t)rec->changes, "deleted", merge_is_deleted(rec),
			      "open_conflicts", (int)rec->conflicts, "devices", devices, "fields",
			      fields, "conflicts", conflicts);
	if (!j) {
		json_decref(groups);
		return NULL;
	}
	for (size_t i = 0; i < rec->n_writers; i++) {
		char dev[17];
		sh_device_fmt(rec->writers[i], dev);
		json_array_append_new(devices, json_string(dev));
	}
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		if (reg->field == MERGE_DELETION_FIELD)
			continue;
		bool inst = merge_reg_in_instance(reg);
		const struct form_field *fd = f ? form_field(f, reg->field) : NULL;
		char name[32];
		const char *key = fd ? fd->name : name;
		snprintf(name, sizeof(name), "field_%u", reg->field);
		const merge_entry_t *cur = merge_current(reg);
		if (cur && !conflicts_only) {
			const struct form_group *g =
				inst ? render_instance_group(rec, f, reg->instance.data) : NULL;
			json_t *into = inst ? instance_obj(groups, rec, g ? g->name : "instance",
							   reg->instance.data)
					    : fields;
			json_object_set_new(into, key, entry_json(fd, cur, false));
		}
		if (merge_live_count(reg) > 1) {
			json_t *vals = json_array();
			for (size_t k = 0; k < reg->n_entries; k++)
				if (!reg->entries[k]->dead && !reg->entries[k]->pending)
					json_array_append_new(vals, entry_json(fd, reg->entries[k], true));
			json_t *c = json_pack("{s:s,s:s,s:i,s:o}", "field", key, "label",
					      fd && fd->label ? fd->label : key, "number",
					      (int)reg->field, "values", vals);
			if (c && inst)
				conflict_instance(c, rec, f, reg, fd);
			json_array_append_new(conflicts, c);
		}
	}
	/* the flags of removed instances, each its own kind */
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *reg = rec->registers[i];
		if (!merge_reg_in_instance(reg) || reg->field != MERGE_DELETION_FIELD)
			continue;
		/* merge_instance_flag() names one reason; both are listed */
		int flag = merge_instance_flag(rec, reg->instance.data);
		const merge_entry_t *cur = merge_current(reg);
		if (!flag || !cur)
			continue;
		bool kinds[2] = {flag == 1,
				 flag == 2 || render_instance_linked(rec, reg->instance.data)};
		char dev[17], stamp[48];
		sh_device_fmt(cur->device, dev);
		hlc_fmt(cur->hlc, stamp, sizeof(stamp));
		for (int k = 0; k < 2; k++) {
			if (!kinds[k])
				continue;
			json_t *c = json_pack("{s:s,s:s,s:i,s:s,s:s}", "field", "_removed", "kind",
					      k ? "link_to_removed_instance" : "removed_instance_edited",
					      "number", 0, "removed_by", dev, "stamp", stamp);
			if (c)
				conflict_instance(c, rec, f, reg, NULL);
			json_array_append_new(conflicts, c);
		}
	}
	if (!conflicts_only && json_object_size(groups))
		json_object_set(j, "groups", groups);
	json_decref(groups);
	const merge_entry_t *del = merge_current(merge_register(rec, MERGE_DELETION_FIELD));
	if (rec->delete_conflict && del) {
		const merge_entry_t *cur = del;
		char dev[17], stamp[48];
		sh_device_fmt(cur->device, dev);
		hlc_fmt(cur->hlc, stamp, sizeof(stamp));
		json_array_append_new(conflicts,
				      json_pack("{s:s,s:s,s:s,s:s}", "field", "_deleted", "kind",
						"edited_while_deleted", "deleted_by", dev, "stamp",
						stamp));
	}
	return j;
}

int render_record_county(const merge_rec_t *rec, const struct form *f, char out[4])
{
	if (!f || !f->county_field)
		return -ENOENT;
	const merge_entry_t *e = merge_current(merge_register(rec, f->county_field->number));
	return e ? render_county_of_value(e->value.data, e->value.len, out) : -ENOENT;
}

int render_county_of_value(const uint8_t *p, size_t n, char out[4])
{
	struct form_value v;
	if (form_value_parse(p, n, &v) < 0 || v.kind != FT_CHOICE || v.str_len != 3)
		return -ENOENT;
	memcpy(out, v.str, 3);
	out[3] = 0;
	return 0;
}

const char *render_county_name(const struct form *f, const char *code)
{
	const struct form_choice *c =
		f && f->county_field ? form_choice(f->county_field, code, strlen(code)) : NULL;
	return c ? c->label : code;
}

int render_value_encode(const struct form_field *fd, const json_t *j, struct buf *out,
			char *err, size_t errlen)
{
	Shahidi__V1__Value v = SHAHIDI__V1__VALUE__INIT;
	Shahidi__V1__Choices ch = SHAHIDI__V1__CHOICES__INIT;
	char **codes = NULL;
	int r = -EINVAL;
	if (json_is_null(j))
		return 0; /* an empty Value: cleared */
	switch (fd->type) {
	case FT_TEXT:
	case FT_DATE:
	case FT_CHOICE:
		if (!json_is_string(j))
			goto bad;
		v.kind_case = fd->type == FT_TEXT ? SHAHIDI__V1__VALUE__KIND_TEXT
			      : fd->type == FT_DATE ? SHAHIDI__V1__VALUE__KIND_DATE
						    : SHAHIDI__V1__VALUE__KIND_CHOICE;
		v.text = (char *)json_string_value(j); /* the oneof shares storage */
		break;
	case FT_INTEGER:
		if (!json_is_integer(j))
			goto bad;
		v.kind_case = SHAHIDI__V1__VALUE__KIND_INTEGER;
		v.integer = json_integer_value(j);
		break;
	case FT_DECIMAL:
		if (!json_is_number(j))
			goto bad;
		v.kind_case = SHAHIDI__V1__VALUE__KIND_DECIMAL;
		v.decimal = json_number_value(j);
		break;
	case FT_BOOLEAN:
		if (!json_is_boolean(j))
			goto bad;
		v.kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
		v.boolean = json_is_true(j);
		break;
	case FT_CHOICES: {
		if (!json_is_array(j))
			goto bad;
		size_t n = json_array_size(j);
		codes = calloc(n + 1, sizeof(*codes));
		if (!codes)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			if (!json_is_string(json_array_get(j, i)))
				goto bad;
			codes[i] = (char *)json_string_value(json_array_get(j, i));
		}
		ch.codes = codes;
		ch.n_codes = n;
		v.kind_case = SHAHIDI__V1__VALUE__KIND_CHOICES;
		v.choices = &ch;
		break;
	}
	default:
		snprintf(err, errlen, "field %s (%s) cannot be set from the office", fd->name,
			 form_type_name(fd->type));
		return -EINVAL;
	}
	size_t n = shahidi__v1__value__get_packed_size(&v);
	if ((r = buf_reserve(out, n)) == 0)
		out->len += shahidi__v1__value__pack(&v, out->data + out->len);
	free(codes);
	return r;
bad:
	free(codes);
	snprintf(err, errlen, "field %s takes %s", fd->name,
		 fd->type == FT_CHOICES ? "an array of codes"
		 : fd->type == FT_INTEGER || fd->type == FT_DECIMAL ? "a number"
		 : fd->type == FT_BOOLEAN ? "true or false" : "a string");
	return r;
}

int render_parse_time(const char *s, uint64_t *ret_ms)
{
	int64_t days;
	unsigned hh = 0, mm = 0, ss = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s && !*end) {
		*ret_ms = v;
		return 0;
	}
	if (strlen(s) < 10 || form_parse_date((const uint8_t *)s, 10, &days) < 0 || days < 0)
		return -EINVAL;
	if (s[10] && sscanf(s + 10, "T%2u:%2u:%2u", &hh, &mm, &ss) < 2)
		return -EINVAL;
	if (hh > 23 || mm > 59 || ss > 60)
		return -EINVAL;
	*ret_ms = ((uint64_t)days * 86400 + hh * 3600 + mm * 60 + ss) * 1000;
	return 0;
}
