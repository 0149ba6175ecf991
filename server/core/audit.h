/* audit: the office's custody log. Every export, resolution, assignment
 * and device change is recorded (who, when, what, how many), in the store
 * beside the data it is about; `shahidi audit` lists it. */
#ifndef SHAHIDI_AUDIT_H
#define SHAHIDI_AUDIT_H

#include <jansson.h>

struct store;
struct store_txn;

/* Appends {"time", "actor", "action", ...details} (details: an object,
 * stolen; may be NULL) in a transaction of its own (audit_record) or in
 * the caller's (audit_record_txn). actor: "device:HEX" or "cli:USER". */
int audit_record(struct store *s, const char *actor, const char *action, json_t *details);
int audit_record_txn(struct store_txn *t, const char *actor, const char *action,
		     json_t *details);

/* "cli:USER" for the user running the CLI, into buf (64 bytes). */
void audit_cli_actor(char buf[64]);

#endif
