/* form: form definitions (the data dictionary) and validation against them.
 *
 * A form version is defined by one JSON file in schema/ (format in
 * schema/README.md); the built-in ones are compiled into the library, more
 * can be loaded from files. Validation, the forms served to devices and the
 * export columns all read these definitions.
 *
 * Validation here is stateless: it depends only on the change and the
 * form, never on what the store holds, so that whether a change is accepted
 * does not depend on the order changes arrive in.
 */
#ifndef SHAHIDI_FORM_H
#define SHAHIDI_FORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Most fields a form version may define. */
#define FORM_MAX_FIELDS 1024

/* Same numbers as shahidi.v1.FieldDef.Type and as Value's oneof members. */
enum form_type {
	FT_NONE = 0, /* as a value kind: cleared */
	FT_TEXT = 1,
	FT_INTEGER = 2,
	FT_DECIMAL = 3,
	FT_BOOLEAN = 4,
	FT_DATE = 5,
	FT_DATETIME = 6,
	FT_CHOICE = 7,
	FT_CHOICES = 8,
	FT_GEOPOINT = 9,
	FT_ATTACHMENT = 10,
	FT_SEALED = 11,
	FT_LINK = 12, /* the 16-byte id of a repeat-group instance */
};

const char *form_type_name(enum form_type t);

struct form_choice {
	const char *code;  /* owned by the registry */
	const char *label;
};

/* A repeat group (shahidi.v1.GroupDef): a part of the record that occurs
 * any number of times, each occurrence an instance with its own id. */
struct form_group {
	const char *name;    /* export table; owned by the registry */
	const char *label;
	uint32_t min, max;   /* instances per record; max 0 = no bound */
	const struct form_group *parent;         /* nested: NULL = the record */
	const struct form_field *parent_field;   /* the LINK naming the parent */
};

struct form_field {
	uint32_t number;
	enum form_type type;
	const char *name;    /* all strings owned by the registry */
	const char *label;
	const char *section;
	const char *hint;
	bool required;
	bool sensitive;
	bool allow_future;   /* DATE/DATETIME: later than today is fine */
	bool has_range;
	double min, max;
	uint32_t max_length; /* TEXT, SEALED: bytes */
	const char *vocabulary;
	const struct form_choice *choices; /* in definition order */
	size_t n_choices;
	const uint16_t *by_hash;           /* private: choices by hash of code */
	uint32_t hash_mask;                /* private: by_hash's size - 1 */
	const uint8_t *code_len;           /* private: each choice's strlen(code) */
	const struct form_group *group;      /* NULL: a field of the record */
	const struct form_group *link_group; /* LINK: whose instances it names */
};

struct form {
	const char *form_id;
	uint32_t version;
	const char *title;
	const struct form_field *fields; /* in display and export order */
	size_t n_fields;
	/* The choice field holding a record's county (county codes 001-047):
	 * what coordinators' county scopes and the status page group by.
	 * NULL when the form has none. */
	const struct form_field *county_field;
	const struct form_group *groups; /* repeat groups, in definition order */
	size_t n_groups;
	const char *origin;              /* file it came from, for messages */
	const uint16_t *by_number;       /* private: field index by number */
	uint32_t max_number;
	const uint64_t *required;        /* private: a bit per required field's index */
};

struct form_registry;

int form_registry_new(struct form_registry **ret);
void form_registry_free(struct form_registry *reg);

/* Adds one form version from JSON text. On failure writes a message to err
 * (naming the form and the field) and returns -EINVAL; -EEXIST when that
 * form version is already loaded. */
int form_registry_add_json(struct form_registry *reg, const char *json, size_t len,
			   const char *origin, char *err, size_t errlen);
/* Adds the forms compiled in from schema/. */
int form_registry_add_builtin(struct form_registry *reg, char *err, size_t errlen);
/* Adds a JSON file, or every *.json file of a directory. */
int form_registry_add_path(struct form_registry *reg, const char *path, char *err, size_t errlen);

/* NULL when not loaded. Pointers stay valid as long as the registry. */
const struct form *form_registry_find(const struct form_registry *reg, const char *form_id,
				      uint32_t version);
size_t form_registry_count(const struct form_registry *reg);
/* Forms sorted by (form_id, version). */
const struct form *form_registry_at(const struct form_registry *reg, size_t i);
/* Appends the encoded shahidi.v1.FormList of every loaded form. */
int form_registry_pack(const struct form_registry *reg, struct buf *out);

/* The field numbered number, or NULL. Inline: the decoder looks up every
 * field of every change (a call was 1k instructions a change). */
const struct form_field *form__field_scan(const struct form *f, uint32_t number);
static inline const struct form_field *form_field(const struct form *f, uint32_t number)
{
	if (!f->by_number)
		return form__field_scan(f, number);
	if (number > f->max_number || f->by_number[number] == UINT16_MAX)
		return NULL;
	return &f->fields[f->by_number[number]];
}
/* The group named name, or NULL. */
const struct form_group *form_group(const struct form *f, const char *name);
const struct form_choice *form_choice(const struct form_field *fd, const char *code, size_t len);

/* A decoded view of an encoded shahidi.v1.Value. Pointers point into the
 * bytes given to form_value_parse() and live as long as they do. */
struct form_value {
	enum form_type kind;    /* FT_NONE: cleared */
	const uint8_t *str;     /* TEXT, DATE, CHOICE: not NUL-terminated;
				   LINK: the instance id's bytes */
	size_t str_len;
	int64_t i;              /* INTEGER, DATETIME */
	double d;               /* DECIMAL */
	bool b;                 /* BOOLEAN */
	const uint8_t *sub;     /* CHOICES, GEOPOINT, ATTACHMENT, SEALED: the
				   encoded sub-message */
	size_t sub_len;
};

/* Parses an encoded Value. Unknown members (a newer app) are skipped.
 * Returns 0, or -EPROTO when the bytes are malformed or set two members. */
int form_value_parse(const uint8_t *p, size_t n, struct form_value *ret);
/* Whether p[0..n) is the boolean true (a deletion register's "deleted"). */
bool form_value_is_true(const uint8_t *p, size_t n);

/* Iterates the codes of a CHOICES value: *pos starts at 0. Returns 1 with
 * the next code, 0 at the end, -EPROTO when malformed. */
int form_value_next_choice(const struct form_value *v, size_t *pos, const uint8_t **ret_code,
			   size_t *ret_len);

struct form_geopoint {
	double latitude, longitude, altitude, accuracy;
};
int form_value_geopoint(const struct form_value *v, struct form_geopoint *ret);

/* Why a change or value was refused: a stable machine code and a sentence
 * for people. Never holds report content. */
struct form_verdict {
	char code[40];
	char reason[200];
};

/* Checks an encoded value against a field. now_ms bounds dates. 0 or
 * -EINVAL with *ret filled. */
int form_check_value(const struct form_field *fd, const uint8_t *value, size_t len,
		     uint64_t now_ms, struct form_verdict *ret);

/* form_check_value on a value already parsed (wire_value_read does it
 * while checking its framing, so that the decoder reads each value once);
 * v NULL: it did not parse (malformed_value). */
int form_check_parsed(const struct form_field *fd, const struct form_value *v, uint64_t now_ms,
		      struct form_verdict *ret);

/* Days since 1970-01-01 of a "YYYY-MM-DD" date; -EINVAL when malformed or
 * not a calendar date. */
int form_parse_date(const uint8_t *s, size_t len, int64_t *ret_days);

/* true when s[0..len) is valid UTF-8 without NUL bytes. */
bool form_utf8_ok(const uint8_t *s, size_t len);

#endif
