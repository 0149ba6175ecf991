/* shahidi device enroll | list | revoke */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "auth.h"
#include "cli.h"
#include "common.h"
#include "office_api.h"
#include "render.h"

/* Enrolments and revocations are the office's actions (office_api.h),
 * audited as the CLI's user, as over HTTP as the admin's device. */
struct enrol_ctx {
	struct auth_enrol e;
	uint64_t id;
	char token[AUTH_TOKEN_LEN + 1];
	struct office_verdict v;
};

static int enrol_fn(struct store_txn *t, void *ud)
{
	struct enrol_ctx *c = ud;
	struct office_actor actor;
	office_api_actor_cli(&actor);
	return office_api_enrol(t, &actor, &c->e, sh_now_ms(), &c->id, c->token, &c->v);
}

static int enroll(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},   {"name", required_argument, 0, 'n'},
		{"county", required_argument, 0, 'c'}, {"role", required_argument, 0, 'r'},
		{"help", no_argument, 0, 'h'},	       {0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA;
	struct enrol_ctx ctx = {.e = {.role = ROLE_DEVICE}};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			data = optarg;
			break;
		case 'n':
			ctx.e.name = optarg;
			break;
		case 'c':
			ctx.e.county = optarg;
			break;
		case 'r':
			if (store_role_parse(optarg, &ctx.e.role) < 0) {
				cli_err("--role takes device, coordinator, admin or metrics");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			printf("Usage: shahidi device enroll [--data DIR] --name NAME --county CODE\n"
			       "                             [--role device|coordinator|admin|metrics]\n\n"
			       "Creates a device (a phone, or a coordinator's or admin's access, or a\n"
			       "Prometheus server's: metrics reads /metrics only, has no county) and\n"
			       "prints its id and its token. The token is shown this once: only a\n"
			       "hash of it is stored. Give it to the device over a safe channel.\n"
			       "A device needs its county (001-047); a coordinator with a county sees\n"
			       "only that county.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (!ctx.e.name) {
		cli_err("enroll needs --name (see --help)");
		return EXIT_USAGE;
	}
	struct store *s = cli_open_store(data, false);
	if (!s)
		return 1;
	int r = store_write(s, enrol_fn, &ctx);
	store_close(s);
	if (r < 0) {
		cli_err("cannot enrol: %s", r == -EINVAL ? ctx.v.msg : sh_strerror(r));
		return r == -EINVAL ? EXIT_USAGE : 1;
	}
	printf("device %016" PRIx64 "\ntoken  %s\n", ctx.id, ctx.token);
	return 0;
}

static int list(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"json", no_argument, 0, 'j'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA;
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			data = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			printf("Usage: shahidi device list [--data DIR] [--json]\n\n"
			       "Lists every device with its role, county and state. Tokens are never\n"
			       "shown: they are not stored.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	struct store *s = cli_open_store(data, true);
	struct arena *a = arena_new();
	struct store_txn *t = NULL;
	int rc = 1, r;
	if (!s || !a || store_begin(s, false, &t) < 0)
		goto out;
	uint64_t id = 0;
	store_device_t *d;
	json_t *arr = json ? json_array() : NULL;
	if (!json)
		printf("%-16s  %-11s  %-6s  %-8s  %s\n", "ID", "ROLE", "COUNTY", "STATE", "NAME");
	while ((r = store_device_next(t, a, &id, &d)) == 1) {
		char hex[17], when[32];
		sh_device_fmt(d->id, hex);
		render_time_ms(d->enrolled_ms, when);
		if (json)
			json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:b,s:s}", "id", hex,
							     "name", d->name, "role",
							     store_role_name(d->role), "county",
							     d->county, "revoked", d->revoked,
							     "enrolled", when));
		else
			printf("%-16s  %-11s  %-6s  %-8s  %s\n", hex, store_role_name(d->role),
			       d->county[0] ? d->county : "-", d->revoked ? "revoked" : "active",
			       d->name);
		arena_reset(a);
	}
	if (json) {
		json_dumpf(arr, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(arr);
	}
	rc = r < 0 ? 1 : 0;
out:
	store_abort(t);
	store_close(s);
	arena_free(a);
	return rc;
}

struct revoke_ctx {
	uint64_t id;
	struct office_verdict v;
};

static int revoke_fn(struct store_txn *t, void *ud)
{
	struct revoke_ctx *c = ud;
	struct office_actor actor;
	office_api_actor_cli(&actor);
	return office_api_revoke(t, &actor, c->id, sh_now_ms(), &c->v);
}

static int revoke(int argc, char **argv)
{
	const char *data;
	int rc;
	if (!cli_data_only(argc, argv,
			   "Usage: shahidi device revoke [--data DIR] ID\n\n"
			   "Revokes a device's token: the server refuses it from the next request\n"
			   "on, without a restart. The device's data stays. Use it at once when a\n"
			   "phone is lost or seized.\n",
			   &data, &rc))
		return rc;
	struct revoke_ctx ctx = {0};
	if (optind != argc - 1 || sh_device_parse(argv[optind], &ctx.id) < 0) {
		cli_err("revoke needs one device id (16 hex digits; see 'shahidi device list')");
		return EXIT_USAGE;
	}
	struct store *s = cli_open_store(data, false);
	if (!s)
		return 1;
	int r = store_write(s, revoke_fn, &ctx);
	store_close(s);
	if (r == -ENOENT) {
		cli_err("no device %s", argv[optind]);
		return 1;
	}
	if (r < 0) {
		cli_err("cannot revoke: %s", sh_strerror(r));
		return 1;
	}
	printf("device %s revoked\n", argv[optind]);
	return 0;
}

int cmd_device(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "enroll"))
		return enroll(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "list"))
		return list(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "revoke"))
		return revoke(argc - 1, argv + 1);
	FILE *out = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout
											 : stderr;
	fprintf(out, "Usage: shahidi device enroll|list|revoke [OPTIONS]\n\n"
		     "  enroll   create a device and print its token (once)\n"
		     "  list     list devices\n"
		     "  revoke   revoke a device's token\n");
	return out == stdout ? 0 : EXIT_USAGE;
}
