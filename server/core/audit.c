#include "audit.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"
#include "render.h"
#include "store.h"

int audit_record_txn(struct store_txn *t, const char *actor, const char *action,
		     json_t *details)
{
	char now[32];
	render_time_ms(sh_now_ms(), now);
	json_t *j = json_pack("{s:s,s:s,s:s}", "time", now, "actor", actor, "action", action);
	if (!j) {
		json_decref(details);
		return -ENOMEM;
	}
	if (details)
		json_object_update(j, details);
	json_decref(details);
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	int r = store_audit_append(t, text, NULL);
	free(text);
	return r;
}

struct audit_ctx {
	const char *actor, *action;
	json_t *details;
};

static int audit_fn(struct store_txn *t, void *ud)
{
	struct audit_ctx *c = ud;
	/* store_write may run this twice (map growth): keep our reference. */
	json_incref(c->details);
	return audit_record_txn(t, c->actor, c->action, c->details);
}

int audit_record(struct store *s, const char *actor, const char *action, json_t *details)
{
	struct audit_ctx c = {actor, action, details};
	int r = store_write(s, audit_fn, &c);
	json_decref(details);
	return r;
}

void audit_cli_actor(char buf[64])
{
	struct passwd *pw = getpwuid(getuid());
	snprintf(buf, 64, "cli:%s", pw && pw->pw_name ? pw->pw_name : "?");
}
