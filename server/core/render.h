/* render: values and records as text and JSON, for people (show,
 * conflicts), for exports and for the HTTP API.
 */
#ifndef SHAHIDI_RENDER_H
#define SHAHIDI_RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "form.h"
#include "merge.h"

/* Appends an encoded Value as text: choices as labels (labels = true) or
 * codes, several joined by "; ", dates as written, date-times in ISO 8601
 * UTC, points as "lat,lon", attachments as "sha256:HEX (SIZE bytes,
 * TYPE)", sealed values as "[sealed, N bytes]". fd may be NULL (a field
 * the form does not know). Appends nothing for a cleared value. */
int render_value_text(const struct form_field *fd, const uint8_t *v, size_t n, bool labels,
		      struct buf *out);

/* The value as JSON: string, number, boolean, array of codes, object for
 * points and attachments, {"sealed": BASE64} for sealed values; JSON null
 * when cleared. New reference, or NULL when out of memory or malformed. */
json_t *render_value_json(const struct form_field *fd, const uint8_t *v, size_t n);

/* ISO 8601 UTC with milliseconds, e.g. "2026-11-27T05:35:20.123Z". buf
 * holds 32 bytes. */
void render_time_ms(uint64_t ms, char buf[32]);

/* The whole merged record for `shahidi show` and the API: envelope, every
 * field's current value with its stamp and device, and every live value
 * of a conflicted field. With conflicts_only, "fields" is left empty: only
 * the values in conflict are shown (what a coordinator needs to resolve
 * them, and no more of the report). A conflict carries the field's
 * "label" and each of its values a "text" as people read it (choice labels,
 * render_value_text). A field of a repeat-group instance is not in
 * "fields" but in "groups": {"victims": [{"instance_id", "removed",
 * "fields"}]}; its conflict also names "group", "group_label",
 * "instance_id" and "path" (render_reg_path), and its "label" is the
 * group's and the field's. A removed instance's flag is a conflict of its
 * own "kind": "removed_instance_edited" (an edit no removal saw) or
 * "link_to_removed_instance", with "removed_by" and "stamp". f may be
 * NULL when the form is not loaded. New
 * reference or NULL. */
json_t *render_record_json(const merge_rec_t *rec, const struct form *f, bool conflicts_only);

/* Repeat groups. The group of instance id of rec (by the definitions in f
 * of its fields), or NULL when none is known. */
const struct form_group *render_instance_group(const merge_rec_t *rec, const struct form *f,
					      const uint8_t id[16]);
/* An instance id as text: the whole UUID, or (short_id) its first 8 and
 * last 4 hex digits ("0192f3ab…c4d2": a v7 id starts with its time, so
 * its end tells instances made together apart). n: 40 is enough. */
void render_instance_id(const uint8_t id[16], bool short_id, char *out, size_t n);
/* Whether a live value of rec links to instance id (merge.h: a removed
 * instance linked to flags the record; merge_instance_flag() says 1, not
 * 2, when an unseen edit flags it too). */
bool render_instance_linked(const merge_rec_t *rec, const uint8_t id[16]);
/* A register's name as people and the API read it: "narrative" for the
 * record's own field, "perpetrators[ID].perpetrator_identifiers" for an
 * instance's, "acts[ID]" for an instance's removal. */
void render_reg_path(const merge_rec_t *rec, const struct form *f, const merge_reg_t *reg,
		     bool short_id, char *out, size_t n);

/* Encodes a value given as JSON for a field (a string for text, dates,
 * a choice code; a number; true/false; an array of codes for choices;
 * null to clear) into an encoded shahidi.v1.Value appended to out. It is
 * not validated against the form: form_check_value() does that. -EINVAL
 * with err filled when the JSON does not fit the field's type. */
int render_value_encode(const struct form_field *fd, const json_t *j, struct buf *out,
			char *err, size_t errlen);

/* Parses YYYY-MM-DD[THH:MM[:SS]] (UTC) or milliseconds since the epoch.
 * 0 or -EINVAL. */
int render_parse_time(const char *s, uint64_t *ret_ms);

/* The record's county code (its form's county_field, current value) into
 * out (4 bytes). 0, or -ENOENT when the form has no county field or the
 * record no county. */
int render_record_county(const merge_rec_t *rec, const struct form *f, char out[4]);
/* The same from the county field's encoded value (v[0..n)): 0, or -ENOENT
 * when it is not a county's code. */
int render_county_of_value(const uint8_t *v, size_t n, char out[4]);

/* The name of a county code ("047" -> "Nairobi City"), from the form's
 * county vocabulary; the code itself when unknown. */
const char *render_county_name(const struct form *f, const char *code);

#endif
