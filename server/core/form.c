#include "form.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arena.h"
#include "codec.h"
#include "fields.h"
#include "common.h"
#include "shahidi.pb-c.h"

/* Built by schema/embed.py from the JSON files in schema/. */
struct form_builtin {
	const char *name;
	const char *json;
	size_t len;
};
extern const struct form_builtin form_builtins[];
extern const size_t form_builtins_count;


#define FORM_TEXT_DEFAULT_MAX 10000u
#define FORM_SEALED_DEFAULT_MAX 65536u
#define FORM_DAY_MS 86400000ull

struct form_registry {
	struct arena *arena; /* every string and array of every form */
	struct form *forms;  /* sorted by (form_id, version); malloc'd */
	size_t n_forms;
};

static const char *const type_names[] = {
	[FT_NONE] = "none",	    [FT_TEXT] = "text",		[FT_INTEGER] = "integer",
	[FT_DECIMAL] = "decimal",   [FT_BOOLEAN] = "boolean",	[FT_DATE] = "date",
	[FT_DATETIME] = "datetime", [FT_CHOICE] = "choice",	[FT_CHOICES] = "choices",
	[FT_GEOPOINT] = "geopoint", [FT_ATTACHMENT] = "attachment", [FT_SEALED] = "sealed",
	[FT_LINK] = "link",
};

const char *form_type_name(enum form_type t)
{
	return (unsigned)t < SH_ARRAY_SIZE(type_names) ? type_names[t] : "?";
}

int form_registry_new(struct form_registry **ret)
{
	struct form_registry *reg = calloc(1, sizeof(*reg));
	if (!reg)
		return -ENOMEM;
	reg->arena = arena_new();
	if (!reg->arena) {
		free(reg);
		return -ENOMEM;
	}
	*ret = reg;
	return 0;
}

void form_registry_free(struct form_registry *reg)
{
	if (!reg)
		return;
	arena_free(reg->arena);
	free(reg->forms);
	free(reg);
}

/* Vocabulary codes are short (64 bytes at most): hashed eight bytes at a
 * time (the last eight overlapping), all of them, then mixed so that the
 * low bits (the table's index) depend on every byte. */
static inline size_t code_hash(const uint8_t *s, size_t len)
{
	uint64_t h = len * 0x9e3779b97f4a7c15ull, w;
	if (len >= 8) {
		size_t i = 0;
		for (; i + 8 <= len; i += 8) {
			memcpy(&w, s + i, 8);
			h = (h ^ w) * 0xff51afd7ed558ccdull;
		}
		if (i < len) {
			memcpy(&w, s + len - 8, 8);
			h = (h ^ w) * 0xff51afd7ed558ccdull;
		}
	} else {
		for (size_t i = 0; i < len; i++)
			h = (h ^ s[i]) * 0x100000001b3ull;
	}
	h ^= h >> 32;
	return (size_t)(h ^ (h >> 17));
}

static const char *dupstr(struct form_registry *reg, const char *s)
{
	if (!s)
		return NULL;
	return arena_memdup(reg->arena, s, strlen(s) + 1);
}

static int cmp_form(const struct form *a, const char *id, uint32_t version)
{
	int c = strcmp(a->form_id, id);
	if (c)
		return c;
	return a->version < version ? -1 : a->version > version;
}

#define FAIL(...)                                          \
	do {                                               \
		snprintf(err, errlen, __VA_ARGS__);        \
		r = -EINVAL;                               \
		goto out;                                  \
	} while (0)

static int parse_type(const char *s)
{
	for (unsigned i = 1; i < SH_ARRAY_SIZE(type_names); i++)
		if (!strcmp(s, type_names[i]))
			return (int)i;
	return -1;
}

static const char *opt_str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

int form_registry_add_json(struct form_registry *reg, const char *json, size_t len,
			   const char *origin, char *err, size_t errlen)
{
	json_error_t jerr;
	int r = 0;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(err, errlen, "%s:%d: %s", origin, jerr.line, jerr.text);
		return -EINVAL;
	}

	const char *id = opt_str(root, "form_id");
	json_t *jver = json_object_get(root, "version");
	json_t *jfields = json_object_get(root, "fields");
	json_t *jvocab = json_object_get(root, "vocabularies");
	if (!id || !*id || strlen(id) > 64)
		FAIL("%s: form_id missing or longer than 64", origin);
	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			FAIL("%s: form_id may hold only a-z, 0-9 and _", origin);
	if (!json_is_integer(jver) || json_integer_value(jver) < 1 ||
	    json_integer_value(jver) > 1000000)
		FAIL("%s: version must be a positive integer", origin);
	uint32_t version = (uint32_t)json_integer_value(jver);
	if (!json_is_array(jfields) || json_array_size(jfields) == 0 ||
	    json_array_size(jfields) > FORM_MAX_FIELDS)
		FAIL("%s: fields must be a non-empty array of at most %d", origin, FORM_MAX_FIELDS);
	if (jvocab && !json_is_object(jvocab))
		FAIL("%s: vocabularies must be an object", origin);
	if (form_registry_find(reg, id, version)) {
		snprintf(err, errlen, "%s: form %s version %u is already loaded", origin, id, version);
		r = -EEXIST;
		goto out;
	}

	/* Repeat groups first: fields name them. */
	json_t *jgroups = json_object_get(root, "groups");
	if (jgroups && (!json_is_array(jgroups) || json_array_size(jgroups) > 64))
		FAIL("%s: groups must be an array of at most 64", origin);
	size_t ng = jgroups ? json_array_size(jgroups) : 0;
	struct form_group *groups = arena_zalloc(reg->arena, (ng + 1) * sizeof(*groups));
	if (!groups) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < ng; i++) {
		json_t *jg = json_array_get(jgroups, i);
		const char *gname = opt_str(jg, "name");
		json_t *jmin = json_object_get(jg, "min"), *jmax = json_object_get(jg, "max");
		if (!json_is_object(jg) || !gname || !*gname)
			FAIL("%s: group #%zu has no name", origin, i + 1);
		if ((jmin && (!json_is_integer(jmin) || json_integer_value(jmin) < 0)) ||
		    (jmax && (!json_is_integer(jmax) || json_integer_value(jmax) < 0 ||
			      json_integer_value(jmax) > 100000)))
			FAIL("%s: group %s: min and max are counts of instances", origin, gname);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(groups[j].name, gname))
				FAIL("%s: two groups are named %s", origin, gname);
		groups[i].name = dupstr(reg, gname);
		groups[i].label = dupstr(reg, opt_str(jg, "label") ? opt_str(jg, "label") : gname);
		groups[i].min = jmin ? (uint32_t)json_integer_value(jmin) : 0;
		groups[i].max = jmax ? (uint32_t)json_integer_value(jmax) : 0;
		if (groups[i].max && groups[i].min > groups[i].max)
			FAIL("%s: group %s: min is above max", origin, gname);
		if (!groups[i].name || !groups[i].label) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < ng; i++) {
		const char *pname = opt_str(json_array_get(jgroups, i), "parent");
		if (!pname)
			continue;
		for (size_t j = 0; j < ng; j++)
			if (!strcmp(groups[j].name, pname))
				groups[i].parent = &groups[j];
		if (!groups[i].parent || groups[i].parent == &groups[i] || groups[i].parent->parent ||
		    opt_str(json_array_get(jgroups, groups[i].parent - groups), "parent"))
			FAIL("%s: group %s: parent %s must be another group, itself not nested "
			     "(groups nest one level)", origin, groups[i].name, pname);
	}

	size_t nf = json_array_size(jfields);
	struct form_field *fields = arena_zalloc(reg->arena, nf * sizeof(*fields));
	if (!fields) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nf; i++) {
		json_t *jf = json_array_get(jfields, i);
		struct form_field *fd = &fields[i];
		const char *name = opt_str(jf, "name");
		const char *type = opt_str(jf, "type");
		json_t *jnum = json_object_get(jf, "number");
		if (!json_is_object(jf) || !name || !*name)
			FAIL("%s: field #%zu has no name", origin, i + 1);
		if (!json_is_integer(jnum) || json_integer_value(jnum) < 1 ||
		    json_integer_value(jnum) > 536870911)
			FAIL("%s: field %s: number must be 1..536870911", origin, name);
		if (!type || parse_type(type) < 0)
			FAIL("%s: field %s: unknown type '%s'", origin, name, type ? type : "");
		fd->number = (uint32_t)json_integer_value(jnum);
		fd->type = (enum form_type)parse_type(type);
		fd->name = dupstr(reg, name);
		fd->label = dupstr(reg, opt_str(jf, "label") ? opt_str(jf, "label") : name);
		fd->section = dupstr(reg, opt_str(jf, "section") ? opt_str(jf, "section") : "");
		fd->hint = dupstr(reg, opt_str(jf, "hint") ? opt_str(jf, "hint") : "");
		fd->required = json_is_true(json_object_get(jf, "required"));
		fd->sensitive = json_is_true(json_object_get(jf, "sensitive"));
		fd->allow_future = json_is_true(json_object_get(jf, "allow_future"));
		const char *gname = opt_str(jf, "group"), *lname = opt_str(jf, "link_group");
		for (size_t j = 0; j < ng && gname; j++)
			if (!strcmp(groups[j].name, gname))
				fd->group = &groups[j];
		if (gname && !fd->group)
			FAIL("%s: field %s: no group named %s", origin, name, gname);
		for (size_t j = 0; j < ng && lname; j++)
			if (!strcmp(groups[j].name, lname))
				fd->link_group = &groups[j];
		if ((fd->type == FT_LINK) != (fd->link_group != NULL))
			FAIL("%s: field %s: link fields, and only they, name a link_group (a group)",
			     origin, name);
		if (fd->group && fd->required)
			FAIL("%s: field %s: a group's fields cannot be required (instances are added "
			     "offline; see the group's min)", origin, name);
		for (size_t j = 0; j < i; j++) {
			if (fields[j].number == fd->number)
				FAIL("%s: fields %s and %s share number %u", origin, fields[j].name,
				     name, fd->number);
			if (!strcmp(fields[j].name, name))
				FAIL("%s: two fields are named %s", origin, name);
		}

		json_t *jmin = json_object_get(jf, "min"), *jmax = json_object_get(jf, "max");
		if (jmin || jmax) {
			if (fd->type != FT_INTEGER && fd->type != FT_DECIMAL)
				FAIL("%s: field %s: min/max only for integer and decimal", origin, name);
			if (!json_is_number(jmin) || !json_is_number(jmax) ||
			    json_number_value(jmin) > json_number_value(jmax))
				FAIL("%s: field %s: give both min and max, min <= max", origin, name);
			fd->has_range = true;
			fd->min = json_number_value(jmin);
			fd->max = json_number_value(jmax);
		}
		json_t *jlen = json_object_get(jf, "max_length");
		if (jlen) {
			if ((fd->type != FT_TEXT && fd->type != FT_SEALED) || !json_is_integer(jlen) ||
			    json_integer_value(jlen) < 1 || json_integer_value(jlen) > 1048576)
				FAIL("%s: field %s: max_length (1..1048576) only for text and sealed",
				     origin, name);
			fd->max_length = (uint32_t)json_integer_value(jlen);
		} else if (fd->type == FT_TEXT) {
			fd->max_length = FORM_TEXT_DEFAULT_MAX;
		} else if (fd->type == FT_SEALED) {
			fd->max_length = FORM_SEALED_DEFAULT_MAX;
		}

		const char *vname = opt_str(jf, "vocabulary");
		if ((fd->type == FT_CHOICE || fd->type == FT_CHOICES) != (vname != NULL))
			FAIL("%s: field %s: choice and choices fields, and only they, name a vocabulary",
			     origin, name);
		if (vname) {
			json_t *jv = jvocab ? json_object_get(jvocab, vname) : NULL;
			if (!json_is_array(jv) || json_array_size(jv) == 0)
				FAIL("%s: field %s: vocabulary %s is missing or empty", origin, name, vname);
			size_t nc = json_array_size(jv);
			struct form_choice *ch = arena_zalloc(reg->arena, nc * sizeof(*ch));
			if (!ch) {
				r = -ENOMEM;
				goto out;
			}
			for (size_t k = 0; k < nc; k++) {
				json_t *pair = json_array_get(jv, k);
				json_t *jc = json_array_get(pair, 0), *jl = json_array_get(pair, 1);
				if (!json_is_array(pair) || json_array_size(pair) != 2 ||
				    !json_is_string(jc) || !json_is_string(jl) ||
				    json_string_length(jc) == 0 || json_string_length(jc) > 64)
					FAIL("%s: vocabulary %s: entry %zu must be [code, label]", origin,
					     vname, k + 1);
				ch[k].code = dupstr(reg, json_string_value(jc));
				ch[k].label = dupstr(reg, json_string_value(jl));
				for (size_t m = 0; m < k; m++)
					if (!strcmp(ch[m].code, ch[k].code))
						FAIL("%s: vocabulary %s repeats code %s", origin, vname,
						     ch[k].code);
			}
			fd->vocabulary = dupstr(reg, vname);
			fd->choices = ch;
			fd->n_choices = nc;
			/* Codes by hash, open addressing at most half full: one
			 * comparison for most values checked (a binary search was
			 * six, 1.4k instructions a report). */
			size_t size = 4;
			while (size < 2 * nc)
				size *= 2;
			uint16_t *tab = arena_alloc(reg->arena, size * sizeof(*tab));
			if (!tab || nc >= UINT16_MAX) {
				r = -ENOMEM;
				goto out;
			}
			uint8_t *lens = arena_alloc(reg->arena, nc);
			if (!lens) {
				r = -ENOMEM;
				goto out;
			}
			memset(tab, 0xff, size * sizeof(*tab));
			for (size_t k = 0; k < nc; k++) {
				lens[k] = (uint8_t)strlen(ch[k].code); /* 64 at most, above */
				size_t h = code_hash((const uint8_t *)ch[k].code, lens[k]);
				while (tab[h & (size - 1)] != UINT16_MAX)
					h++;
				tab[h & (size - 1)] = (uint16_t)k;
			}
			fd->by_hash = tab;
			fd->hash_mask = (uint32_t)(size - 1);
			fd->code_len = lens;
		}
		if (!fd->name || !fd->label || !fd->section || !fd->hint) {
			r = -ENOMEM;
			goto out;
		}
	}

	struct form *forms = realloc(reg->forms, (reg->n_forms + 1) * sizeof(*forms));
	if (!forms) {
		r = -ENOMEM;
		goto out;
	}
	reg->forms = forms;
	size_t at = 0;
	while (at < reg->n_forms && cmp_form(&forms[at], id, version) < 0)
		at++;
	memmove(&forms[at + 1], &forms[at], (reg->n_forms - at) * sizeof(*forms));
	for (size_t i = 0; i < ng; i++) {
		const char *pf = opt_str(json_array_get(jgroups, i), "parent_field");
		if (!groups[i].parent != !pf)
			FAIL("%s: group %s: a nested group names its parent_field, and only it", origin,
			     groups[i].name);
		for (size_t j = 0; j < nf && pf; j++)
			if (!strcmp(fields[j].name, pf))
				groups[i].parent_field = &fields[j];
		if (pf && (!groups[i].parent_field || groups[i].parent_field->type != FT_LINK ||
			   groups[i].parent_field->group != &groups[i] ||
			   groups[i].parent_field->link_group != groups[i].parent))
			FAIL("%s: group %s: parent_field %s must be one of its link fields, naming "
			     "the parent group", origin, groups[i].name, pf);
	}
	const struct form_field *county = NULL;
	const char *cname = opt_str(root, "county_field");
	if (cname) {
		for (size_t i = 0; i < nf && !county; i++)
			if (!strcmp(fields[i].name, cname))
				county = &fields[i];
		if (!county || county->type != FT_CHOICE || county->group)
			FAIL("%s: county_field %s is not a choice field of the form", origin, cname);
	}
	/* Field by number in one step: numbers are small in practice. */
	uint32_t max_number = 0;
	uint16_t *by_number = NULL;
	for (size_t i = 0; i < nf; i++)
		max_number = SH_MAX(max_number, fields[i].number);
	if (max_number < 65536 && nf < UINT16_MAX) {
		if (!(by_number = arena_alloc(reg->arena, (max_number + 1) * sizeof(*by_number)))) {
			r = -ENOMEM;
			goto out;
		}
		memset(by_number, 0xff, (max_number + 1) * sizeof(*by_number));
		for (size_t i = 0; i < nf; i++)
			by_number[fields[i].number] = (uint16_t)i;
	}
	/* The required fields, a bit each by index: a new record's check is a
	 * few words, not a walk of every field. */
	uint64_t *required = arena_zalloc(reg->arena, (nf + 63) / 64 * sizeof(*required));
	if (!required) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nf; i++)
		if (fields[i].required)
			required[i / 64] |= 1ull << (i % 64);
	forms[at] = (struct form){
		.form_id = dupstr(reg, id),
		.version = version,
		.title = dupstr(reg, opt_str(root, "title") ? opt_str(root, "title") : id),
		.fields = fields,
		.n_fields = nf,
		.county_field = county,
		.groups = groups,
		.n_groups = ng,
		.origin = dupstr(reg, origin),
		.by_number = by_number,
		.max_number = max_number,
		.required = required,
	};
	reg->n_forms++;
out:
	json_decref(root);
	return r;
}

int form_registry_add_builtin(struct form_registry *reg, char *err, size_t errlen)
{
	for (size_t i = 0; i < form_builtins_count; i++) {
		int r = form_registry_add_json(reg, form_builtins[i].json, form_builtins[i].len,
					       form_builtins[i].name, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

static int add_file(struct form_registry *reg, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	struct buf text = {0};
	char chunk[4096];
	size_t n;
	int r = 0;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && r == 0)
		r = text.len + n > (size_t)16 << 20 ? -EMSGSIZE : buf_append(&text, chunk, n);
	if (ferror(f) && r == 0)
		r = -EIO;
	fclose(f);
	if (r == 0)
		r = form_registry_add_json(reg, (const char *)text.data, text.len, path, err, errlen);
	else
		snprintf(err, errlen, "%s: cannot read: %s", path, sh_strerror(r));
	buf_free(&text);
	return r;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int form_registry_add_path(struct form_registry *reg, const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode))
		return add_file(reg, path, err, errlen);

	DIR *d = opendir(path);
	if (!d) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	char **names = NULL;
	size_t n = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l < 6 || strcmp(de->d_name + l - 5, ".json"))
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(*names));
		if (!nn) {
			r = -ENOMEM;
			goto out;
		}
		names = nn;
		if (!(names[n] = malloc(strlen(path) + l + 2))) {
			r = -ENOMEM;
			goto out;
		}
		sprintf(names[n++], "%s/%s", path, de->d_name);
	}
	qsort(names, n, sizeof(*names), cmp_str); /* load order independent of readdir */
	for (size_t i = 0; i < n && r == 0; i++)
		r = add_file(reg, names[i], err, errlen);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

const struct form *form_registry_find(const struct form_registry *reg, const char *form_id,
				      uint32_t version)
{
	size_t lo = 0, hi = reg->n_forms;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = cmp_form(&reg->forms[mid], form_id, version);
		if (c == 0)
			return &reg->forms[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

size_t form_registry_count(const struct form_registry *reg)
{
	return reg->n_forms;
}

const struct form *form_registry_at(const struct form_registry *reg, size_t i)
{
	return i < reg->n_forms ? &reg->forms[i] : NULL;
}

int form_registry_pack(const struct form_registry *reg, struct buf *out)
{
	struct arena *a = arena_new();
	int r = -ENOMEM;
	if (!a)
		return -ENOMEM;
	Shahidi__V1__FormList list = SHAHIDI__V1__FORM_LIST__INIT;
	list.n_forms = reg->n_forms;
	list.forms = arena_alloc(a, reg->n_forms * sizeof(*list.forms));
	if (!list.forms)
		goto out;
	for (size_t i = 0; i < reg->n_forms; i++) {
		const struct form *f = &reg->forms[i];
		Shahidi__V1__FormDef *fd = arena_alloc(a, sizeof(*fd));
		if (!fd)
			goto out;
		shahidi__v1__form_def__init(fd);
		fd->form_id = (char *)f->form_id;
		fd->version = f->version;
		fd->title = (char *)f->title;
		fd->n_fields = f->n_fields;
		fd->fields = arena_alloc(a, f->n_fields * sizeof(*fd->fields));
		if (!fd->fields)
			goto out;
		for (size_t j = 0; j < f->n_fields; j++) {
			const struct form_field *ff = &f->fields[j];
			Shahidi__V1__FieldDef *d = arena_alloc(a, sizeof(*d));
			if (!d)
				goto out;
			shahidi__v1__field_def__init(d);
			d->number = ff->number;
			d->name = (char *)ff->name;
			d->label = (char *)ff->label;
			d->type = (Shahidi__V1__FieldDef__Type)ff->type;
			d->required = ff->required;
			d->sensitive = ff->sensitive;
			d->section = (char *)ff->section;
			d->hint = (char *)ff->hint;
			d->max_length = ff->max_length;
			d->has_range = ff->has_range;
			d->min = ff->min;
			d->max = ff->max;
			d->group = ff->group ? (char *)ff->group->name : "";
			d->link_group = ff->link_group ? (char *)ff->link_group->name : "";
			d->n_choices = ff->n_choices;
			d->choices = arena_alloc(a, (ff->n_choices + 1) * sizeof(*d->choices));
			if (!d->choices)
				goto out;
			for (size_t k = 0; k < ff->n_choices; k++) {
				Shahidi__V1__Choice *c = arena_alloc(a, sizeof(*c));
				if (!c)
					goto out;
				shahidi__v1__choice__init(c);
				c->code = (char *)ff->choices[k].code;
				c->label = (char *)ff->choices[k].label;
				d->choices[k] = c;
			}
			fd->fields[j] = d;
		}
		fd->n_groups = f->n_groups;
		fd->groups = arena_alloc(a, (f->n_groups + 1) * sizeof(*fd->groups));
		if (!fd->groups)
			goto out;
		for (size_t j = 0; j < f->n_groups; j++) {
			const struct form_group *g = &f->groups[j];
			Shahidi__V1__GroupDef *gd = arena_alloc(a, sizeof(*gd));
			if (!gd)
				goto out;
			shahidi__v1__group_def__init(gd);
			gd->name = (char *)g->name;
			gd->label = (char *)g->label;
			gd->min = g->min;
			gd->max = g->max;
			gd->parent = g->parent ? (char *)g->parent->name : "";
			gd->parent_field = g->parent_field ? g->parent_field->number : 0;
			fd->groups[j] = gd;
		}
		list.forms[i] = fd;
	}
	size_t n = shahidi__v1__form_list__get_packed_size(&list);
	if ((r = buf_reserve(out, n)) < 0)
		goto out;
	out->len += shahidi__v1__form_list__pack(&list, out->data + out->len);
	r = 0;
out:
	arena_free(a);
	return r;
}

const struct form_field *form__field_scan(const struct form *f, uint32_t number)
{
	for (size_t i = 0; i < f->n_fields; i++)
		if (f->fields[i].number == number)
			return &f->fields[i];
	return NULL;
}

const struct form_group *form_group(const struct form *f, const char *name)
{
	for (size_t i = 0; i < f->n_groups; i++)
		if (!strcmp(f->groups[i].name, name))
			return &f->groups[i];
	return NULL;
}

const struct form_choice *form_choice(const struct form_field *fd, const char *code, size_t len)
{
	if (!fd->by_hash)
		return NULL;
	for (size_t h = code_hash((const uint8_t *)code, len);; h++) {
		uint16_t k = fd->by_hash[h & fd->hash_mask];
		if (k == UINT16_MAX)
			return NULL;
		/* same length and bytes: a code holds no NUL, so neither does
		 * what matches it */
		if (fd->code_len[k] == len && !memcmp(fd->choices[k].code, code, len))
			return &fd->choices[k];
	}
}

static double get_double(uint64_t bits)
{
	double d;
	memcpy(&d, &bits, sizeof(d));
	return d;
}

int form_value_parse(const uint8_t *p, size_t n, struct form_value *ret)
{
	struct form_value v = {.kind = FT_NONE};
	struct pb_field f;
	size_t pos = 0;
	int r;

	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number < FT_TEXT || f.number > FT_LINK)
			continue; /* unknown member: a newer app; kept in the bytes */
		if (v.kind != FT_NONE)
			return -EPROTO; /* two members of a oneof: ambiguous, refuse */
		static const uint8_t wire[] = {
			[FT_TEXT] = 2,	   [FT_INTEGER] = 0, [FT_DECIMAL] = 1,	 [FT_BOOLEAN] = 0,
			[FT_DATE] = 2,	   [FT_DATETIME] = 0, [FT_CHOICE] = 2,	 [FT_CHOICES] = 2,
			[FT_GEOPOINT] = 2, [FT_ATTACHMENT] = 2, [FT_SEALED] = 2, [FT_LINK] = 2,
		};
		if (f.wire_type != wire[f.number])
			return -EPROTO;
		v.kind = (enum form_type)f.number;
		switch (v.kind) {
		case FT_TEXT:
		case FT_DATE:
		case FT_CHOICE:
		case FT_LINK:
			v.str = f.data;
			v.str_len = f.len;
			break;
		case FT_INTEGER:
		case FT_DATETIME:
			/* sint64: zigzag */
			v.i = (int64_t)((f.varint >> 1) ^ (~(f.varint & 1) + 1));
			break;
		case FT_DECIMAL:
			v.d = get_double(f.varint);
			break;
		case FT_BOOLEAN:
			v.b = f.varint != 0;
			break;
		default:
			v.sub = f.data;
			v.sub_len = f.len;
			break;
		}
	}
	if (r < 0)
		return r;
	*ret = v;
	return 0;
}

bool form_value_is_true(const uint8_t *p, size_t n)
{
	struct form_value v;
	return form_value_parse(p, n, &v) == 0 && v.kind == FT_BOOLEAN && v.b;
}

int form_value_next_choice(const struct form_value *v, size_t *pos, const uint8_t **ret_code,
			   size_t *ret_len)
{
	struct pb_field f;
	int r;
	while ((r = codec_pb_next(v->sub, v->sub_len, pos, &f)) > 0) {
		if (f.number != CHOICES_CODES)
			continue;
		if (f.wire_type != 2)
			return -EPROTO;
		*ret_code = f.data;
		*ret_len = f.len;
		return 1;
	}
	return r;
}

int form_value_geopoint(const struct form_value *v, struct form_geopoint *ret)
{
	struct form_geopoint g = {0};
	struct pb_field f;
	size_t pos = 0;
	int r;
	while ((r = codec_pb_next(v->sub, v->sub_len, &pos, &f)) > 0) {
		if (f.number < GEO_POINT_LATITUDE || f.number > GEO_POINT_ACCURACY)
			continue;
		if (f.wire_type != 1)
			return -EPROTO;
		double d = get_double(f.varint);
		if (f.number == GEO_POINT_LATITUDE)
			g.latitude = d;
		else if (f.number == GEO_POINT_LONGITUDE)
			g.longitude = d;
		else if (f.number == GEO_POINT_ALTITUDE)
			g.altitude = d;
		else
			g.accuracy = d;
	}
	if (r < 0)
		return r;
	*ret = g;
	return 0;
}

bool form_utf8_ok(const uint8_t *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		/* Eight plain ASCII bytes at a time, none of them NUL: nearly all
		 * of the text phones send (5% of the server's CPU went here). */
		while (len - i >= 8) {
			uint64_t v;
			memcpy(&v, s + i, 8);
			if ((v & 0x8080808080808080ull) ||
			    ((v - 0x0101010101010101ull) & ~v & 0x8080808080808080ull))
				break;
			i += 8;
		}
		if (i >= len)
			break;
		uint8_t c = s[i];
		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp;
		if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong forms, surrogates, beyond Unicode */
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += n + 1;
	}
	return true;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* Howard Hinnant's algorithm: proleptic Gregorian calendar. */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

int form_parse_date(const uint8_t *s, size_t len, int64_t *ret_days)
{
	if (len != 10 || s[4] != '-' || s[7] != '-')
		return -EINVAL;
	/* the eight digits' places, unrolled (a loop over fields of widths
	 * 4, 2, 2 was 200 instructions a date) */
	static const uint8_t at[8] = {0, 1, 2, 3, 5, 6, 8, 9};
	unsigned dg[8];
	for (int i = 0; i < 8; i++) {
		dg[i] = (unsigned)s[at[i]] - '0'; /* below '0' wraps above 9 */
		if (dg[i] > 9)
			return -EINVAL;
	}
	static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	unsigned y = dg[0] * 1000 + dg[1] * 100 + dg[2] * 10 + dg[3];
	unsigned m = dg[4] * 10 + dg[5], d = dg[6] * 10 + dg[7];
	if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return -EINVAL;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (m == 2 && d == 29 && !leap)
		return -EINVAL;
	*ret_days = days_from_civil(y, m, d);
	return 0;
}

#define VERDICT(c, ...)                                                  \
	do {                                                             \
		snprintf(ret->code, sizeof(ret->code), "%s", c);         \
		int o_ = snprintf(ret->reason, sizeof(ret->reason), "field %u (%s): ", \
				  fd->number, fd->name);                 \
		if (o_ > 0 && (size_t)o_ < sizeof(ret->reason))          \
			snprintf(ret->reason + o_, sizeof(ret->reason) - (size_t)o_, __VA_ARGS__); \
		return -EINVAL;                                          \
	} while (0)

int form_check_value(const struct form_field *fd, const uint8_t *value, size_t len,
		     uint64_t now_ms, struct form_verdict *ret)
{
	struct form_value v;
	bool ok = form_value_parse(value, len, &v) == 0;
	return form_check_parsed(fd, ok ? &v : NULL, now_ms, ret);
}

/* The last day a date may name: a day of slack for time zones. Only
 * dates and date-times ask (a division for every value was 0.2k
 * instructions a report). */
static int64_t max_day(uint64_t now_ms)
{
	return (int64_t)(now_ms / FORM_DAY_MS) + 1;
}

int form_check_parsed(const struct form_field *fd, const struct form_value *pv, uint64_t now_ms,
		      struct form_verdict *ret)
{
	if (!pv)
		VERDICT("malformed_value", "the value is not a well-formed Value message");
	const struct form_value *v = pv; /* read in place: no copy */
	if (v->kind == FT_NONE)
		return 0; /* cleared; whether that is allowed is the change's check */
	if (v->kind != fd->type)
		VERDICT("wrong_type", "expected %s, got %s", form_type_name(fd->type),
			form_type_name(v->kind));

	switch (v->kind) {
	case FT_TEXT:
		if (v->str_len > fd->max_length)
			VERDICT("text_too_long", "%zu bytes, at most %u allowed", v->str_len,
				fd->max_length);
		if (!form_utf8_ok(v->str, v->str_len))
			VERDICT("bad_text", "text must be UTF-8 without NUL characters");
		break;
	case FT_INTEGER:
		if (fd->has_range && ((double)v->i < fd->min || (double)v->i > fd->max))
			VERDICT("out_of_range", "must be between %.0f and %.0f", fd->min, fd->max);
		break;
	case FT_DECIMAL:
		if (!isfinite(v->d))
			VERDICT("out_of_range", "must be a finite number");
		if (fd->has_range && (v->d < fd->min || v->d > fd->max))
			VERDICT("out_of_range", "must be between %g and %g", fd->min, fd->max);
		break;
	case FT_BOOLEAN:
		break;
	case FT_DATE: {
		int64_t days;
		if (form_parse_date(v->str, v->str_len, &days) < 0)
			VERDICT("bad_date", "dates are YYYY-MM-DD calendar dates");
		if (days < days_from_civil(1900, 1, 1))
			VERDICT("bad_date", "dates before 1900 are not accepted");
		if (!fd->allow_future && days > max_day(now_ms))
			VERDICT("future_date", "the date is after today");
		break;
	}
	case FT_DATETIME:
		if (v->i < days_from_civil(1900, 1, 1) * (int64_t)FORM_DAY_MS)
			VERDICT("bad_date", "date-times before 1900 are not accepted");
		if (!fd->allow_future && v->i > (max_day(now_ms) + 1) * (int64_t)FORM_DAY_MS)
			VERDICT("future_date", "the date-time is after today");
		break;
	case FT_CHOICE:
		if (!form_choice(fd, (const char *)v->str, v->str_len))
			VERDICT("choice_not_in_vocabulary", "the code is not in vocabulary %s",
				fd->vocabulary);
		break;
	case FT_CHOICES: {
		size_t pos = 0, n = 0, clen;
		const uint8_t *code;
		int r;
		/* a code found is its vocabulary entry: a repeat is an entry met
		 * twice (a bit each; rescanning the codes before each one was
		 * a third of this check) */
		uint64_t met[(UINT16_MAX + 63) / 64];
		memset(met, 0, (fd->n_choices + 63) / 64 * sizeof(*met));
		while ((r = form_value_next_choice(v, &pos, &code, &clen)) > 0) {
			const struct form_choice *c = form_choice(fd, (const char *)code, clen);
			if (!c)
				VERDICT("choice_not_in_vocabulary",
					"code %zu is not in vocabulary %s", n + 1, fd->vocabulary);
			if (++n > fd->n_choices)
				VERDICT("too_many_choices", "more codes than the vocabulary has");
			size_t k = (size_t)(c - fd->choices);
			if (met[k / 64] & (1ull << (k % 64)))
				VERDICT("repeated_choice", "code %zu repeats an earlier one", n);
			met[k / 64] |= 1ull << (k % 64);
		}
		if (r < 0)
			VERDICT("malformed_value", "the choices are not well-formed");
		break;
	}
	case FT_GEOPOINT: {
		struct form_geopoint g;
		if (form_value_geopoint(v, &g) < 0)
			VERDICT("malformed_value", "the point is not well-formed");
		if (!isfinite(g.latitude) || !isfinite(g.longitude) || g.latitude < -90 ||
		    g.latitude > 90 || g.longitude < -180 || g.longitude > 180 ||
		    !isfinite(g.altitude) || !isfinite(g.accuracy) || g.accuracy < 0)
			VERDICT("out_of_range", "latitude -90..90, longitude -180..180");
		break;
	}
	case FT_ATTACHMENT: {
		/* Read from the bytes as sent: a C string would hide what follows
		 * a NUL from the checks. */
		struct pb_field f;
		size_t pos = 0, id_len = 0, sha_len = 0, mt_len = 0;
		const uint8_t *mt = NULL;
		uint64_t size = 0;
		int r;
		while ((r = codec_pb_next(v->sub, v->sub_len, &pos, &f)) > 0) {
			if (f.number >= ATTACHMENT_FILE_ID && f.number <= ATTACHMENT_MEDIA_TYPE &&
			    f.wire_type != (f.number == ATTACHMENT_SIZE ? 0u : 2u))
				r = -EPROTO;
			if (r < 0)
				break;
			if (f.number == ATTACHMENT_FILE_ID)
				id_len = f.len;
			else if (f.number == ATTACHMENT_SHA256)
				sha_len = f.len;
			else if (f.number == ATTACHMENT_SIZE)
				size = f.varint;
			else if (f.number == ATTACHMENT_MEDIA_TYPE) {
				mt = f.data;
				mt_len = f.len;
			}
		}
		if (r < 0)
			VERDICT("malformed_value", "the attachment reference is not well-formed");
		if (id_len != 16 || sha_len != 32 || size > (1ull << 40) || mt_len == 0 ||
		    mt_len > 100 || !form_utf8_ok(mt, mt_len))
			VERDICT("bad_attachment",
				"needs a 16-byte file id, a 32-byte SHA-256, a size (an empty file is "
				"one) and a media type");
		break;
	}
	case FT_LINK: {
		static const uint8_t nil[16];
		if (v->str_len != 16 || !memcmp(v->str, nil, 16))
			VERDICT("bad_link", "a link is the 16-byte id of an instance, not the nil id");
		break;
	}
	case FT_SEALED:
		if (v->sub_len > fd->max_length + 128u)
			VERDICT("sealed_too_long", "%zu bytes, at most %u allowed", v->sub_len,
				fd->max_length);
		break;
	default:
		break;
	}
	return 0;
}
