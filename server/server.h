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

struct server_config {
	const char *data_dir;
	const char *listen;          /* host:port, [v6]:port */
	bool allow_plaintext;        /* listen beyond loopback without TLS */
	bool damaged_ok;             /* serve a store whose chain does not verify */
	const char *forms_path;      /* extra form definitions, or NULL */
	size_t max_body;             /* request body bytes as sent (413) */
	size_t max_header;           /* request line + headers bytes (431) */
	struct sync_limits sync;     /* inflated size, changes per batch... */
	unsigned header_timeout_ms;  /* first byte to end of headers (408) */
	unsigned body_timeout_ms;    /* end of headers to end of body (408) */
	unsigned body_stall_ms;      /* a body with no new byte for this long (408) */
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
	size_t max_file;             /* an attachment's bytes (413 at creation) */
	uint64_t upload_expiry_ms;   /* an incomplete upload is dropped after this */
	size_t upload_rate;          /* uploads' bytes to the disk a second; 0: no cap */
	unsigned commit_window_us;   /* a commit waits this long at most for more
					batches when more are likely (writer.h); 0: off */
	bool unsafe_nosync;          /* the store without fsync: fuzzing only */
};

/* The request-latency histogram's bucket bounds, in microseconds: 1 ms
 * to 10 s (server.c). */
#define SERVER_LATENCY_BOUNDS 13
extern const uint32_t server_latency_us[SERVER_LATENCY_BOUNDS];

/* Counters for /metrics. Touched on the loop thread only, so plain
 * increments: no lock, no atomic. */
struct server_stats {
	uint64_t requests[32][6];    /* [route][status class 1xx..5xx] */
	/* Requests by time from their first byte read to their response's
	 * last byte handed to the socket (uv_write): [route][bucket], not
	 * cumulative, [route][SERVER_LATENCY_BOUNDS] above the last bound;
	 * and the sum of those times. */
	uint64_t latency[32][SERVER_LATENCY_BOUNDS + 1];
	uint64_t latency_sum_ns[32];
	uint64_t batches, batches_replayed;
	uint64_t changes_applied, changes_duplicate, changes_rejected;
	uint64_t conns_open, conns_total, conns_refused;
	uint64_t reads_paused;   /* a connection's next request left unread: overloaded */
	uint64_t auth_failures;
	uint64_t auth_throttled;
	/* Upload body bytes read in one loop iteration, the most since start
	 * (http_int.h: UPLOAD_READ_BUDGET), and the reads of uploads put off
	 * to a later iteration: the budget spent, their turn in the round
	 * taken, other requests being answered (UPLOAD_HOLD_MS). */
	uint64_t upload_read_iter_max;
	uint64_t upload_deferred_budget, upload_deferred_round, upload_deferred_others;
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
	/* Requests answered later (task.h) in flight: the server waits for
	 * none to be left before it stops. Of which not pushes: pulls and the
	 * office have places of their own, so pushes never hold them back. */
	uint64_t busy, busy_others;
	uint64_t exports;            /* exports started: their audit ids */
	/* The tokens as last seen (auth.h), so that the loop checks a token
	 * without a transaction; built by the writer. Loop thread only. */
	struct auth_cache *tokens;
	bool tokens_pending;         /* a new one is being built */
	bool stopping;
};

/* The defaults of every flag (see shahidi-server --help). */
void server_config_default(struct server_config *cfg);

/* Builds the server from srv->cfg: the forms (built in, then
 * cfg->forms_path), the store (an older format merged again from its
 * log), the rate limit of refused tokens, the default loop. On failure
 * says why in err and returns a negative errno; server_free frees what
 * was built. */
int server_init(struct server *srv, char *err, size_t errlen);
/* Starts the writer thread and listens (http_start with the routes).
 * err is left empty when http_start has already said why. */
int server_start(struct server *srv, char *err, size_t errlen);
/* Keeps c as srv->tokens unless the one there is newer (then c is
 * freed). Takes c, which may be NULL. Loop thread. */
void server_tokens_install(struct server *srv, struct auth_cache *c);
/* Asks the writer for a new srv->tokens (once at a time): another process
 * wrote to the store. Loop thread. */
void server_tokens_refresh(struct server *srv);

/* After the loop has run dry: frees everything server_init and
 * server_start built. Half-built servers are fine. */
void server_free(struct server *srv);

#endif
