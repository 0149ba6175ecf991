/* status: what field coordinators look at. Per device, per county and
 * store-wide sync status, computed from the store. The server's
 * GET /v1/status, its status page and `shahidi status` all use this, so
 * they always show the same numbers.
 *
 * A coordinator limited to some counties sees only those counties'
 * devices and records, and no store-wide figures.
 */
#ifndef SHAHIDI_STATUS_H
#define SHAHIDI_STATUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "form.h"
#include "scope.h"

struct store;

struct status_opts {
	struct scope scope;          /* the counties shown (scope_all(): all) */
	double silent_days;          /* devices silent longer are listed (7) */
	bool all_counties;           /* a row for every county in the scope, not
					only those with devices or records */
	uint64_t now_ms;
};

/* Collects the status as a JSON object (new reference in *ret). Reads
 * records page by page, each page in its own short read transaction. */
int status_collect(struct store *s, const struct form_registry *forms,
		   const struct status_opts *o, json_t **ret);

/* A record's custody trail: every change to it from the change log, in
 * order, with receipt time, pushing device, batch, stamps, chain hash and
 * the values it set (field number, name, label, value as text).
 * include_sensitive (scope.h: an admin's and the CLI's) false: a write of a
 * field the form marks sensitive, or one it does not list, keeps its
 * field, name, label and place in the trail but has no "value": it says
 * "withheld": "sensitive" instead. -ENOENT when there is no such record.
 * For scope checks, ret_counties (may be NULL) receives every county the
 * record has been in, its current one first, as "047,042" (at most
 * counties_len bytes): a record a phone moved to another county stays
 * visible, with its move, to the coordinators of the county it left. */
int status_history(struct store *s, const struct form_registry *forms, const uint8_t id[16],
		   bool include_sensitive, json_t **ret, char *ret_counties, size_t counties_len);

/* The records in scope with open conflicts (at most STATUS_CONFLICTS_MAX),
 * as {"open_conflicts": N, "records": [...]}: each record as
 * render_record_json(conflicts_only) shows it, with its "county". Without
 * include_sensitive, a conflict of a sensitive field (or one the form does
 * not list) keeps its field, label, number, path and each value's device
 * and stamps, but no value nor text: the conflict and each of its values
 * say "withheld": "sensitive". New reference in *ret. */
#define STATUS_CONFLICTS_MAX 5000
int status_conflicts(struct store *s, const struct form_registry *forms,
		     const struct scope *scope, bool include_sensitive, json_t **ret);

#endif
