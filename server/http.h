/* http: HTTP/1.1 on libuv, parsed by llhttp. Connections, keep-alive,
 * pipelining, limits and timeouts. What a request means is not known
 * here: the server hands http_start a table of handlers (struct
 * http_handlers), and http calls nothing above it.
 *
 * Each connection handles one request at a time: while a request is being
 * processed the connection is not read (pipelined bytes wait, unparsed),
 * which bounds what one client can make the server hold.
 */
#ifndef SHAHIDI_HTTP_H
#define SHAHIDI_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "scope.h"

struct server;
struct http_server;
struct http_conn;

#define HTTP_MAX_TOKEN 128

/* One request as routes see it. Strings are NUL-terminated and owned by
 * the connection until the response is sent. */
struct http_request {
	int method;                 /* llhttp's HTTP_GET, HTTP_POST... */
	const char *method_name;
	const char *path;
	const char *query;          /* after '?', "" when none */
	char token[HTTP_MAX_TOKEN + 1]; /* bearer token, "" when none */
	bool token_too_long;
	enum codec_enc enc;         /* Content-Encoding */
	bool enc_unsupported;
	bool accept_deflate, accept_gzip;
	uint8_t peer[16];           /* client address (IPv4 as ::ffff:a.b.c.d);
				       behind a trusted proxy, its X-Forwarded-For */
	bool has_length;
	bool chunked;
	uint64_t content_length;
	const uint8_t *body;        /* whole body, after on_request */
	size_t body_len;
	/* Set by the on_headers handler: */
	const char *route;          /* for the log and metrics */
	int route_id;
	size_t body_limit;          /* 0: the route takes no body */
	uint64_t device;            /* authenticated device, 0 = none */
	uint32_t role;
	char county[4];
	struct scope scope;         /* what the token may see (scope.h) */
	uint32_t changes;           /* for the log: changes in a push */
	/* Headers the file routes (tus) read; "" when absent, cut to size. */
	struct {
		char length[24], offset[24], checksum[96], content_type[64], range[64];
		char metadata[512];
	} tus;
	/* A body taken as it arrives (routes_on_headers sets these): each
	 * piece goes to body_sink as soon as it is parsed, charged to the
	 * admission budget only while the call lasts, and nothing is
	 * buffered (body stays empty). A negative return refuses the request
	 * (-ENOSPC: 507) once the rest of the body has been read and dropped,
	 * so that a client still sending reads the answer. A request that
	 * ends before on_request (refused, timed out, connection lost, or
	 * that refusal) gets one body_abort call; after it, or
	 * once on_request runs, the sink is not called again. body_ud is the
	 * route's, and stays readable in on_request. Such a body has a stall
	 * limit (--body-stall) but no total one: a slow link may take long. */
	int (*body_sink)(void *ud, const uint8_t *p, size_t n);
	void (*body_abort)(void *ud);
	void *body_ud;
};

/* What the server does with requests. The table outlives the server. */
struct http_handlers {
	/* Decides the route, checks the token and sets req->body_limit; it
	 * may respond at once (then the body is not read and the
	 * connection closes). */
	void (*on_headers)(struct http_conn *c, struct http_request *req);
	/* The body has arrived: answer, now or later. */
	void (*on_request)(struct http_conn *c, struct http_request *req);
	/* Is the work in flight too much to start reading another request?
	 * push: the next request is a push (false: /healthz, pulls, the
	 * office, which have places of their own); admitted: connections
	 * let in to read a request they have not read yet. */
	bool (*overloaded)(struct server *srv, bool push, unsigned admitted);
};

/* Starts listening on srv->cfg.listen, handing requests to handlers.
 * Prints the bound address. */
int http_start(struct server *srv, const struct http_handlers *handlers);
/* Stops accepting; idle connections close, busy ones close after their
 * response. */
void http_stop(struct server *srv);
/* The value of name in a query string (req->query), %-decoded, into out
 * (truncated to len). false when absent. */
bool http_query_get(const char *query, const char *name, char *out, size_t len);

/* Work that held the server back has finished: resume reading paused
 * connections if the server is no longer overloaded. */
void http_kick(struct server *srv);

/* The port it listens on (after http_start). */
int http_port(const struct server *srv);
/* Connections open now. */
unsigned http_conns(const struct server *srv);
void http_free(struct server *srv);

/* Sends a response and finishes the request. body is copied. A body of
 * content_type application/x-protobuf is compressed when the request
 * accepts it. May be called after the client went away (it is then a
 * no-op). */
void http_respond(struct http_conn *c, int status, const char *content_type,
		  const uint8_t *body, size_t len);
/* The same with a body already encoded as enc (CODEC_IDENTITY: as it
 * is), for a large body compressed off the event loop with
 * http_compress; CODEC_AUTO is http_respond. */
void http_respond_encoded(struct http_conn *c, int status, const char *content_type,
			  enum codec_enc enc, const uint8_t *body, size_t len);
/* What a response body is compressed as, for any thread, at level (zlib's
 * 1-9): true with body in out as enc (deflate or gzip) when that is worth
 * it (over 64 bytes, and smaller); false with out freed otherwise. */
bool http_compress(enum codec_enc enc, int level, const uint8_t *body, size_t len,
		   struct buf *out);
/* The encoding the request accepts for a response (gzip before deflate),
 * CODEC_IDENTITY when none. */
enum codec_enc http_accepted_encoding(const struct http_conn *c);
/* A short JSON error body: {"error": code, "message": message}. */
void http_error(struct http_conn *c, int status, const char *code, const char *message);
/* Adds a header line to the next response, e.g. "Allow: GET". */
void http_add_header(struct http_conn *c, const char *line);

/* Streaming a long response (exports): chunked transfer encoding. The
 * producer writes one chunk at a time and is called back (drained) once
 * that chunk has left, so at most one chunk is held per connection.
 * http_stream_write returns -EPIPE when the client has gone: stop then. */
int http_stream_start(struct http_conn *c, int status, const char *content_type);
/* The same without chunks: the body is exactly length bytes, written with
 * http_stream_write (a file's bytes read from disk). */
int http_stream_start_length(struct http_conn *c, int status, const char *content_type,
			     uint64_t length);
int http_stream_write(struct http_conn *c, const uint8_t *p, size_t n,
		      void (*drained)(void *ud), void *ud);
void http_stream_end(struct http_conn *c);
bool http_conn_gone(struct http_conn *c);

/* A connection stays allocated while referenced (async work in flight). */
void http_conn_ref(struct http_conn *c);
void http_conn_unref(struct http_conn *c);
struct http_request *http_conn_request(struct http_conn *c);
struct server *http_conn_server(struct http_conn *c);

bool http_responded(struct http_conn *c);

#endif
