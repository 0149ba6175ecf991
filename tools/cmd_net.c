/* shahidi push | pull: the reference client the tests use. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "client.h"
#include "codec.h"
#include "common.h"
#include "hlc.h"
#include "render.h"
#include "shahidi.pb-c.h"
#include "uuid.h"

#define DEFAULT_SERVER "http://127.0.0.1:8080"

const char *cli_token(const char *arg, const char *file)
{
	static char buf[256];
	if (arg)
		return arg;
	if (file) {
		FILE *f = fopen(file, "r");
		if (!f || !fgets(buf, sizeof(buf), f)) {
			cli_err("cannot read a token from %s", file);
			if (f)
				fclose(f);
			return NULL;
		}
		fclose(f);
		buf[strcspn(buf, "\r\n")] = 0;
		return buf;
	}
	const char *env = getenv("SHAHIDI_TOKEN");
	if (env && *env)
		return env;
	cli_err("no token: give --token-file FILE, set SHAHIDI_TOKEN, or --token T");
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void print_error_body(const struct client_response *r)
{
	json_error_t e;
	json_t *j = json_loadb((const char *)r->body.data, r->body.len, 0, &e);
	const char *code = j ? json_string_value(json_object_get(j, "error")) : NULL;
	const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
	cli_err("server answered %d %s: %s", r->status, code ? code : "", msg ? msg : "");
	json_decref(j);
}

/* Sends a request, retrying with backoff when the link or the server
 * fails (the same bytes: pushes are idempotent). */
static int request(const char *server, const char *method, const char *path, const char *hdrs,
		   const uint8_t *body, size_t len, unsigned retries, unsigned timeout_ms,
		   struct client_response *ret)
{
	unsigned backoff = 250;
	for (unsigned attempt = 0;; attempt++) {
		struct client_response r;
		int rc = client_request(server, method, path, hdrs, body, len, timeout_ms, &r);
		bool transient = rc < 0 || r.status >= 500 || r.status == 429 || r.status == 408;
		if (!transient || attempt >= retries) {
			if (rc == 0)
				*ret = r;
			return rc;
		}
		if (rc == 0) {
			fprintf(stderr, "shahidi: %d from server, retrying in %u ms\n", r.status, backoff);
			client_response_free(&r);
		} else {
			fprintf(stderr, "shahidi: %s, retrying in %u ms\n", sh_strerror(rc), backoff);
		}
		sleep_ms(backoff);
		backoff = backoff * 2 > 8000 ? 8000 : backoff * 2;
	}
}

struct net_opts {
	const char *server, *token, *token_file;
	unsigned retries;
	unsigned timeout_ms;
};

enum { O_SERVER = 1000, O_TOKEN, O_TOKEN_FILE, O_RETRIES, O_TIMEOUT, O_CURSOR, O_LIMIT, O_ALL,
       O_JSON, O_QUIET };

static bool net_opt(int c, struct net_opts *o)
{
	switch (c) {
	case O_SERVER:
		o->server = optarg;
		return true;
	case O_TOKEN:
		o->token = optarg;
		return true;
	case O_TOKEN_FILE:
		o->token_file = optarg;
		return true;
	case O_RETRIES:
		o->retries = (unsigned)strtoul(optarg, NULL, 10);
		return true;
	case O_TIMEOUT:
		o->timeout_ms = (unsigned)(strtod(optarg, NULL) * 1000);
		return true;
	default:
		return false;
	}
}

#define NET_OPTIONS                                                                             \
	{"server", required_argument, 0, O_SERVER}, {"token", required_argument, 0, O_TOKEN},   \
		{"token-file", required_argument, 0, O_TOKEN_FILE},                             \
		{"retries", required_argument, 0, O_RETRIES},                                   \
		{"timeout", required_argument, 0, O_TIMEOUT}

#define NET_HELP                                                                        \
	"  --server URL        the server (default " DEFAULT_SERVER ")\n"               \
	"  --token-file FILE   the device's token (or set SHAHIDI_TOKEN; --token T\n"   \
	"                      works too but shows the token in ps)\n"                  \
	"  --retries N         retries on failed links and 5xx, with backoff (5)\n"     \
	"  --timeout SEC       per attempt (default 60)\n"

int cmd_push(int argc, char **argv)
{
	static const struct option opts[] = {
		NET_OPTIONS, {"quiet", no_argument, 0, O_QUIET}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
	};
	struct net_opts o = {DEFAULT_SERVER, NULL, NULL, 5, 60000};
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
		if (net_opt(c, &o))
			continue;
		if (c == O_QUIET || c == 'q') {
			quiet = true;
		} else if (c == 'h') {
			printf("Usage: shahidi push [OPTIONS] FILE...\n\n"
			       "Sends push batch files (as 'shahidi sample' writes them: protobuf,\n"
			       "deflate/gzip/plain, detected) to POST /v1/push and prints each change's\n"
			       "result. A batch may be sent again safely: the server answers a retry\n"
			       "as it answered the first time.\n\n" NET_HELP
			       "  --quiet             print only rejections and the summary\n");
			return 0;
		} else {
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		cli_err("push needs a batch file (see --help)");
		return EXIT_USAGE;
	}
	const char *token = cli_token(o.token, o.token_file);
	if (!token)
		return EXIT_USAGE;
	char hdrs[512];
	int rc = 0;
	for (int i = optind; i < argc; i++) {
		uint8_t *body;
		size_t len;
		if (cli_read_file(argv[i], &body, &len) < 0) {
			cli_err("cannot read %s", argv[i]);
			rc = 1;
			continue;
		}
		const char *enc = len >= 2 && body[0] == 0x1f && body[1] == 0x8b ? "gzip"
				  : len >= 2 && (body[0] & 0x0f) == 8 && (body[0] * 256 + body[1]) % 31 == 0
				      ? "deflate"
				      : "identity";
		snprintf(hdrs, sizeof(hdrs),
			 "Authorization: Bearer %s\r\nContent-Type: application/x-protobuf\r\n"
			 "Content-Encoding: %s\r\n",
			 token, enc);
		struct client_response r;
		int e = request(o.server, "POST", "/v1/push", hdrs, body, len, o.retries, o.timeout_ms, &r);
		free(body);
		if (e < 0) {
			cli_err("%s: cannot reach %s: %s", argv[i], o.server, sh_strerror(e));
			rc = 1;
			continue;
		}
		if (r.status != 200) {
			print_error_body(&r);
			rc = 1;
		} else if (cli_print_push_response(r.body.data, r.body.len, quiet) < 0) {
			cli_err("the server's answer is not a PushResponse");
			rc = 1;
		}
		client_response_free(&r);
	}
	return rc;
}

static void print_pulled(const Shahidi__V1__PulledChange *pc, bool json)
{
	const Shahidi__V1__Change *ch = pc->change;
	char id[UUID_STR_LEN + 1] = "?", dev[17], when[32], stamp[48] = "";
	if (ch && ch->record_id.len == 16)
		uuid_fmt(ch->record_id.data, id);
	sh_device_fmt(ch && ch->origin ? ch->origin : pc->device, dev);
	render_time_ms(pc->received_ms, when);
	if (ch)
		hlc_fmt(ch->hlc, stamp, sizeof(stamp));
	if (json) {
		json_t *j = json_pack("{s:I,s:I,s:s,s:s,s:I,s:s,s:i,s:b,s:s}", "cursor",
				      (json_int_t)pc->cursor, "log_seq", (json_int_t)pc->log_seq,
				      "device", dev, "record_id", id, "change_id",
				      (json_int_t)(ch ? ch->change_id : 0), "received", when, "fields",
				      (int)(ch ? ch->n_fields : 0), "deletion", ch && ch->deletion,
				      "stamp", stamp);
		char *s = json_dumps(j, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(j);
	} else {
		printf("%" PRIu64 ": record %s, change %" PRIu64 " of device %s, %zu field%s%s, stamp %s\n",
		       pc->cursor, id, ch ? ch->change_id : 0, dev, ch ? ch->n_fields : 0,
		       ch && ch->n_fields == 1 ? "" : "s", ch && ch->deletion ? " + deletion" : "",
		       stamp);
	}
}

int cmd_pull(int argc, char **argv)
{
	static const struct option opts[] = {
		NET_OPTIONS,
		{"cursor", required_argument, 0, O_CURSOR},
		{"limit", required_argument, 0, O_LIMIT},
		{"all", no_argument, 0, O_ALL},
		{"json", no_argument, 0, O_JSON},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	struct net_opts o = {DEFAULT_SERVER, NULL, NULL, 5, 60000};
	uint64_t cursor = 0, limit = 1000;
	bool all = false, json = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (net_opt(c, &o))
			continue;
		switch (c) {
		case O_CURSOR:
			cursor = strtoull(optarg, NULL, 10);
			break;
		case O_LIMIT:
			limit = strtoull(optarg, NULL, 10);
			break;
		case O_ALL:
			all = true;
			break;
		case O_JSON:
			json = true;
			break;
		case 'h':
			printf("Usage: shahidi pull [OPTIONS]\n\n"
			       "Fetches the changes this device may see (the records it wrote or was\n"
			       "assigned) since a cursor, from GET /v1/pull, and prints one line per\n"
			       "change, then the cursor to use next.\n\n" NET_HELP
			       "  --cursor N          start after this cursor (default 0)\n"
			       "  --limit N           changes per request (default 1000)\n"
			       "  --all               keep pulling until nothing more waits\n"
			       "  --json              one JSON object per line\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	const char *token = cli_token(o.token, o.token_file);
	if (!token)
		return EXIT_USAGE;
	char hdrs[300], path[128];
	snprintf(hdrs, sizeof(hdrs), "Authorization: Bearer %s\r\n", token);
	uint64_t total = 0;
	bool more;
	do {
		snprintf(path, sizeof(path), "/v1/pull?cursor=%" PRIu64 "&limit=%" PRIu64, cursor, limit);
		struct client_response r;
		int e = request(o.server, "GET", path, hdrs, NULL, 0, o.retries, o.timeout_ms, &r);
		if (e < 0) {
			cli_err("cannot reach %s: %s", o.server, sh_strerror(e));
			return 1;
		}
		if (r.status != 200) {
			print_error_body(&r);
			client_response_free(&r);
			return 1;
		}
		Shahidi__V1__PullResponse *pr =
			shahidi__v1__pull_response__unpack(NULL, r.body.len, r.body.data);
		client_response_free(&r);
		if (!pr) {
			cli_err("the server's answer is not a PullResponse");
			return 1;
		}
		for (size_t i = 0; i < pr->n_changes; i++)
			print_pulled(pr->changes[i], json);
		total += pr->n_changes;
		more = pr->more;
		if (pr->next_cursor)
			cursor = pr->next_cursor;
		shahidi__v1__pull_response__free_unpacked(pr, NULL);
	} while (all && more);
	if (json)
		printf("{\"next_cursor\":%" PRIu64 ",\"more\":%s,\"changes\":%" PRIu64 "}\n", cursor,
		       more ? "true" : "false", total);
	else
		printf("%" PRIu64 " change%s; next cursor %" PRIu64 "%s\n", total, total == 1 ? "" : "s",
		       cursor, more ? " (more waiting: --all)" : "");
	return 0;
}
