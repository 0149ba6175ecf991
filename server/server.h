/* The server's shared context: configuration and the long-lived objects
 * every module of the daemon uses. One per process. */
#ifndef SHAHIDI_SERVER_H
#define SHAHIDI_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "form.h"
#include "store.h"
#include "sync.h"
#include "writer.h"

#define SERVER_MAX_SCOPE 47

struct server_config {
	const char *data_dir;
	const char *listen;          /* host:port, [v6]:port */
	bool allow_plaintext;        /* listen beyond loopback without TLS */
	const char *forms_path;      /* extra form definitions, or NULL */
	size_t max_body;             /* request body bytes as sent (413) */
	size_t max_header;           /* request line + headers bytes (431) */
	struct sync_limits sync;     /* inflated size, changes per batch... */
	unsigned header_timeout_ms;  /* first byte to end of headers (408) */
	unsigned body_timeout_ms;    /* end of headers to end of body (408) */
	unsigned idle_timeout_ms;    /* keep-alive connection with no request */
	unsigned write_timeout_ms;   /* a response the client does not read */
	unsigned max_conns;          /* more get 503 and are closed */
	size_t max_inflight;         /* request bodies held at once, bytes */
	unsigned max_queue;          /* writer jobs before reading pauses */
	uint32_t pull_limit;         /* most changes per pull response */
	size_t map_size, max_map_size;
	size_t release_above;   /* mapped bytes resident before the map is let go of */
	uint64_t max_skew_ms;
	bool quiet;                  /* no per-request log lines */
	bool trust_proxy;            /* a loopback peer's X-Forwarded-For names the client */
	unsigned auth_burst;         /* failed token checks an address may make... */
	unsigned auth_refill_ms;     /* ...and then one more per this long (429) */
};

/* Counters for /metrics. Touched on the loop thread only. */
struct server_stats {
	uint64_t requests[32][6];    /* [route][status class 1xx..5xx] */
	uint64_t batches, batches_replayed;
	uint64_t changes_applied, changes_duplicate, changes_rejected;
	uint64_t conns_open, conns_total, conns_refused;
	uint64_t reads_paused;   /* a connection's next request left unread: overloaded */
	uint64_t auth_failures;
	uint64_t auth_throttled;
};

struct server {
	struct server_config cfg;
	uv_loop_t *loop;
	struct store *store;
	struct writer *writer;
	struct form_registry *forms;
	uint8_t *forms_packed;       /* encoded FormList, built once */
	size_t forms_packed_len;
	struct http_server *http;
	struct ratelimit *auth_limit;
	struct server_stats stats;
	bool stopping;
};

#endif
