/* office_api: what the office does to the store, once, for both the
 * server's office routes (server/office.c) and the CLI (tools/cmd_office.c,
 * tools/cmd_device.c): resolve a conflict, assign a record, enrol and
 * revoke a device, and the audit entries of an export. Each action checks
 * who may do it (the actor's scope, scope.h), does it, and writes its
 * audit entry (audit.h), all in the caller's write transaction.
 *
 * Returns: 0; a refusal, with v filled (a stable code and a message) and
 * nothing written: -ENOENT (no such record or device, or one outside the
 * actor's counties: the two look the same), -EINVAL (a request that does
 * not fit), -EALREADY (no conflict to resolve there), -EPERM (an actor
 * that may not); or a store error (-ENOSPC, -ENOMEM, -EIO) that fails the
 * transaction.
 */
#ifndef SHAHIDI_OFFICE_API_H
#define SHAHIDI_OFFICE_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "export.h"
#include "form.h"
#include "resolve.h"
#include "scope.h"

struct store_txn;

struct office_actor {
	uint64_t device;    /* the acting device; 0 for the CLI's own user */
	struct scope scope; /* what it may see and change */
	char name[64];      /* for the audit log: "device:HEX" or "cli:USER" */
};

struct office_verdict {
	char code[40];      /* e.g. no_such_record, unknown_field, wrong_type */
	char msg[400];
};

/* The actor a device is: its scope, its name. -EPERM when it is not a
 * coordinator's or an admin's, or is revoked; -ENOENT when it does not
 * exist. */
int office_api_actor_device(struct store_txn *t, uint64_t device, struct office_actor *ret);
/* The CLI's own user: every county, sensitive values too (scope_of_cli). */
void office_api_actor_cli(struct office_actor *ret);

struct office_resolve {
	uint8_t record_id[16];
	/* the field by name, by number, or either (the CLI's "FIELD") */
	const char *field_name;     /* NULL: by number */
	uint32_t field_number;      /* 0: by name */
	enum resolve_how how;
	uint64_t take_device;       /* RESOLVE_TAKE */
	json_t *value;              /* RESOLVE_VALUE: JSON as render_value_encode takes it */
	bool deleted;               /* RESOLVE_DELETED */
	const uint8_t *instance;    /* a repeat-group instance's 16-byte id, or
				       NULL: the record's own field or deletion */
};

/* Resolves a conflict as the actor. *ret_log_seq: the resolution's log
 * entry. A field the form marks sensitive is resolved (taken or written)
 * only by an actor whose scope sees sensitive values (scope.h: an admin,
 * the CLI's user); others get -EPERM sensitive_field_admin_only, before
 * anything else about the conflict is looked at. */
int office_api_resolve(struct store_txn *t, const struct form_registry *forms,
		       const struct office_actor *actor, const struct office_resolve *q,
		       uint64_t now_ms, uint64_t *ret_log_seq, struct office_verdict *v);

/* Assigns a record to a phone (an active device with the phone role, in
 * the actor's counties). */
int office_api_assign(struct store_txn *t, const struct form_registry *forms,
		      const struct office_actor *actor, const uint8_t record_id[16],
		      uint64_t device, struct office_verdict *v);

/* Enrols a device (auth_enrol): *ret_id and token (AUTH_TOKEN_LEN + 1
 * bytes, shown once) on success. */
int office_api_enrol(struct store_txn *t, const struct office_actor *actor,
		     const struct auth_enrol *e, uint64_t now_ms, uint64_t *ret_id, char *token,
		     struct office_verdict *v);

/* Revokes a device's token (auth_revoke). */
int office_api_revoke(struct store_txn *t, const struct office_actor *actor, uint64_t device,
		      uint64_t now_ms, struct office_verdict *v);

/* The audit entries of an export: one before its first byte (what was
 * asked: export_start_entry), one after its last (export_end_entry), tied
 * by id. Each returns a new JSON object, NULL when out of memory. */
json_t *office_api_export_start_entry(const char *id, const struct export_opts *o);
json_t *office_api_export_end_entry(const char *id, uint64_t records, const char *outcome);
/* Writes an export's entry (action "export" or "export_end"). entry is
 * not stolen. */
int office_api_export_audit(struct store_txn *t, const struct office_actor *actor,
			    bool end, json_t *entry);

#endif
