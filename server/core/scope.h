/* scope: which counties a token may see and change. The one place that
 * answers "may this token see or change this record" for the server's
 * office routes, the status page and the CLI.
 *
 * A scope is a bitset of counties: bit n is the county whose code is n
 * ("001" .. SCOPE_COUNTIES), the codes of the forms' county vocabulary
 * (form.h: county_field; unit.scope checks that the built-in vocabulary is
 * exactly these). A scope that holds all counties also holds records that
 * have no county. Plain values: copy them freely.
 *
 * A scope also says whether its holder sees the values of the fields a
 * form marks sensitive (survivor's name, phone, ID, narrative, GPS point,
 * a victim's name...) outside an export: in a record's history
 * (status_history) and the conflicts list (status_conflicts), and whether
 * it may resolve their conflicts (office_api_resolve). Only an admin's
 * token and the CLI (whoever holds the data directory) do, as only they
 * export them (office_export.c). This is the one place that decides it.
 */
#ifndef SHAHIDI_SCOPE_H
#define SHAHIDI_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "form.h"
#include "merge.h"
#include "store.h"

#define SCOPE_COUNTIES 47 /* county codes 001..047 */

struct scope {
	bool all;      /* every county, and records without one */
	uint64_t bits; /* when not all: bit n for county code n */
	bool sensitive; /* sees (and may resolve) sensitive fields' values */
};

/* The number of a county code ("047" -> 47), or -EINVAL when it is not
 * one: three digits, 1..SCOPE_COUNTIES. */
int scope_county_number(const char *code);

/* Every county (and not the sensitive values). */
struct scope scope_all(void);
/* No county (add them with scope_add). */
struct scope scope_none(void);
/* Adds a county by its code. 0, or -EINVAL for a code that is none. */
int scope_add(struct scope *s, const char *code);
/* "042,047" (commas or spaces) as a scope; "" is none. -EINVAL at the
 * first code that is none, with that code in bad (at most badlen). */
int scope_parse(const char *list, struct scope *ret, char *bad, size_t badlen);

/* What a device's token may see: a coordinator its counties (the one it
 * was enrolled with when it has no list; all when it has none at all); an
 * admin all, sensitive values too; a phone all (what it may change is the
 * holding rule's business, apply.h). Only an admin's scope is sensitive. */
struct scope scope_of_device(const store_device_t *d);
/* What the CLI's user may see: it holds the data directory, so all of it,
 * sensitive values too. */
struct scope scope_of_cli(void);

/* Is the county (a code, "" or NULL for none) in the scope? */
bool scope_has(const struct scope *s, const char *county);
/* Is any of the counties "047,042" (as status_history lists them; "" for
 * none) in the scope? */
bool scope_has_any(const struct scope *s, const char *counties);
/* May a token with this scope see or change the record? Its county is
 * read as the record's form says (render_record_county); f may be NULL.
 * ret_county (may be NULL) receives it. */
bool scope_has_record(const struct scope *s, const merge_rec_t *rec, const struct form *f,
		      char ret_county[4]);

/* The codes of the scope's counties in order, into codes (and pointers to
 * them into ptrs when not NULL), for the interfaces that take lists. 0
 * when the scope is all. */
size_t scope_codes(const struct scope *s, char codes[SCOPE_COUNTIES][4],
		   const char *ptrs[SCOPE_COUNTIES]);

#endif
