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
 * of a conflicted field. f may be NULL when the form is not loaded.
 * New reference or NULL. */
json_t *render_record_json(const merge_rec_t *rec, const struct form *f);

#endif
