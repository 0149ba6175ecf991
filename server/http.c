#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include "admit.h"
#include "buf.h"
#include "common.h"
#include "render.h"
#include "routes.h"
#include "server.h"

#define READ_CHUNK (64 * 1024)
#define WRITE_QUEUE_CAP (1024 * 1024) /* stop parsing while more is unsent */
#define DRAIN_POLL_MS 250 /* how often to look whether an answer has arrived */

enum conn_state {
	CS_IDLE,    /* keep-alive, waiting for a request */
	CS_HEADERS, /* reading request line and headers */
	CS_BODY,    /* reading the body */
	CS_BUSY,    /* request being handled; not reading */
};

enum hdr {
	H_OTHER,
	H_AUTHORIZATION,
	H_CONTENT_ENCODING,
	H_ACCEPT_ENCODING,
	H_EXPECT,
	H_FORWARDED_FOR,
};

struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	struct server *srv;
	llhttp_t parser;
	enum conn_state state;
	int refs;            /* the connection itself + async work in flight */
	int open_handles;    /* tcp and timer until their close callbacks */
	bool closing;
	bool reading;
	bool in_parser;      /* inside llhttp_execute: do not re-enter it */
	bool responded;
	bool close_after;    /* close once the response is written */
	bool peer_eof;
	bool paused_by_server; /* backpressure */
	bool granted;        /* resumed: may read its next request even while
				others wait (not when overloaded) */
	bool has_data;       /* paused with a request waiting in its socket */
	bool admitted;       /* resumed with a request to read: it holds one
				of the queue's places until it has read it */
	bool expect_continue;
	bool draining;       /* idle, its answer not yet received by the client */
	bool version_seen;   /* the request line named HTTP/1.x */
	bool hval_open;      /* a header value is being parsed... */
	const char *hval_next; /* ...and its next byte would be here */
	const char *exec_end; /* the end of what the parser was last given */
	bool log_deferred;   /* answered inside the parser: logged after it */
	int log_status;
	size_t log_out;
	int error_status;    /* set by a parser callback that refused */
	struct http_request req;
	struct buf url;
	char hname[32];
	size_t hname_len;
	enum hdr hcur;
	struct buf hval;
	size_t header_bytes;
	struct buf body;
	struct buf pending;  /* bytes read and not parsed yet */
	char extra[256];     /* extra response header lines */
	size_t extra_len;
	size_t inflight;     /* body bytes arrived, charged to admit */
	uint64_t inflight_dev; /* the device they are charged to */
	uint64_t t0;         /* request start, monotonic ns */
	uint64_t body_t0, body_last; /* the body's start and last bytes, ns */
	uint64_t drain_t0;   /* when its answer was written, ns */
	size_t bytes_in;     /* the request's bytes parsed so far */
	uint8_t peer[16];    /* the socket's remote address */
	bool peer_loopback;
	bool streaming;      /* a chunked response is being written */
	size_t stream_out;   /* its bytes so far, for the log */
	struct http_conn *prev, *next;
};

struct write_req {
	uv_write_t req;
	struct http_conn *c;
	struct buf data;
	void (*drained)(void *ud); /* streams: the producer waits for this */
	void *ud;
};

struct http_server {
	uv_tcp_t listener;
	bool listening;
	struct http_conn *conns; /* every open connection */
	unsigned n_conns;
	struct http_conn *resume_from; /* where resume_paused() looks first */
	struct admit *admit;     /* request body bytes held, per device */
	bool paused;             /* reading paused for backpressure */
	unsigned admitted;       /* connections admitted, request not read yet */
	uv_timer_t resume_timer; /* while some wait: resume_paused() again */
	bool resume_timer_open;
	llhttp_settings_t settings;
	char buf[READ_CHUNK];    /* shared read buffer: parsing is synchronous */
};

static void process(struct http_conn *c);
static void pause_by_server(struct http_conn *c);
static void unadmit(struct http_conn *c);
static void conn_close(struct http_conn *c);
static void update_reading(struct http_conn *c);

static const char *status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 507: return "Insufficient Storage";
	default: return "Status";
	}
}

/* ---- connection life ---- */

static void conn_free(struct http_conn *c)
{
	buf_free(&c->url);
	buf_free(&c->hval);
	buf_free(&c->body);
	buf_free(&c->pending);
	free(c);
}

static void release_inflight(struct http_conn *c)
{
	struct http_server *h = c->srv->http;
	admit_release(h->admit, c->inflight_dev, c->inflight);
	c->inflight = 0;
}

static void on_handle_closed(uv_handle_t *hd)
{
	struct http_conn *c = hd->data;
	if (--c->open_handles == 0 && c->refs == 0)
		conn_free(c);
}

void http_conn_ref(struct http_conn *c)
{
	c->refs++;
}

void http_conn_unref(struct http_conn *c)
{
	if (--c->refs == 0 && c->open_handles == 0)
		conn_free(c);
}

struct http_request *http_conn_request(struct http_conn *c)
{
	return &c->req;
}

struct server *http_conn_server(struct http_conn *c)
{
	return c->srv;
}

bool http_responded(struct http_conn *c)
{
	return c->responded;
}

static void resume_paused(struct server *srv);

static void conn_close(struct http_conn *c)
{
	if (c->closing)
		return;
	struct server *srv = c->srv;
	struct http_server *h = srv->http;
	c->closing = true;
	release_inflight(c);
	unadmit(c);
	if (h->resume_from == c)
		h->resume_from = c->next;
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	h->n_conns--;
	srv->stats.conns_open = h->n_conns;
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	http_conn_unref(c); /* the connection's own reference */
	resume_paused(srv);
}

/* ---- backpressure ---- */

static bool overloaded(struct server *srv)
{
	/* Requests being decoded count as much as those waiting for the
	 * writer: both hold their decoded batch in memory; so do those about
	 * to be read. */
	return admit_full(srv->http->admit) ||
	       routes_busy(srv) + srv->http->admitted >= srv->cfg.max_queue ||
	       writer_backlog(srv->writer) >= srv->cfg.max_queue;
}

/* Requests that only read have places of their own: pushes waiting for
 * the writer do not hold back /healthz, pulls or the office. */
static bool reads_overloaded(struct server *srv)
{
	return routes_reads_busy(srv) >= srv->cfg.max_queue;
}

/* Whether the request c is about to read only reads (GET, HEAD): 1 yes,
 * 0 no, -1 nothing has arrived to tell. Looks at what is parsed, or
 * unparsed, or peeks at the socket without taking anything from it. */
static int next_is_read(struct http_conn *c)
{
	if (c->state == CS_HEADERS && c->header_bytes) {
		int m = llhttp_get_method(&c->parser);
		return m == HTTP_GET || m == HTTP_HEAD;
	}
	if (c->pending.len)
		return admit_is_read((const char *)c->pending.data, c->pending.len);
	uv_os_fd_t fd;
	char b[5];
	if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) < 0)
		return 0;
	ssize_t n = recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
	if (n <= 0)
		return -1;
	return admit_is_read(b, (size_t)n);
}

static void unadmit(struct http_conn *c)
{
	if (c->admitted) {
		c->admitted = false;
		c->srv->http->admitted--;
	}
}

static void resume_paused(struct server *srv)
{
	struct http_server *h = srv->http;
	if (!h || !h->paused || overloaded(srv))
		return;
	h->paused = false;
	/* Round robin from where the last pass stopped: with a thousand
	 * phones waiting, those at the head of the list must not always go
	 * first (measured: p99 push latency 2.5 s, 1000 devices x batch 20). */
	struct http_conn *c = h->resume_from ? h->resume_from : h->conns;
	for (unsigned i = 0; c && i < h->n_conns; i++) {
		struct http_conn *next = c->next ? c->next : h->conns;
		if (c->paused_by_server) {
			c->paused_by_server = false;
			c->granted = true;
			/* One whose request waits in its socket takes a place
			 * in the queue until it has read it, so that this pass
			 * admits no more than fit (the others would read, find
			 * no room and pause again: a herd, served in the
			 * kernel's order). One with the request already read
			 * takes its place at once, in process(). */
			if (c->has_data) {
				c->admitted = true;
				h->admitted++;
			}
			c->has_data = false;
			if (c->pending.len && c->state == CS_IDLE)
				process(c); /* a request read while we were overloaded */
			else
				update_reading(c);
			if (overloaded(srv)) {
				h->resume_from = next; /* the rest stay paused: no herd */
				break;
			}
		}
		c = next;
	}
	/* Some may still be paused: look again at the next kick. */
	for (c = h->conns; c && !h->paused; c = c->next)
		h->paused = c->paused_by_server;
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t);

static void arm(struct http_conn *c, unsigned ms)
{
	uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Bytes the client has not yet acknowledged: in our write queue, or in
 * the socket's send queue (SIOCOUTQ: unsent and unacknowledged). */
static size_t unreceived(struct http_conn *c)
{
	size_t n = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
#ifdef SIOCOUTQ
	uv_os_fd_t fd;
	int q = 0;
	if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &q) == 0 &&
	    q > 0)
		n += (size_t)q;
#endif
	return n;
}

/* A keep-alive connection's idle time starts when the client has its
 * answer, not when it was written: over a link that stalls, an answer
 * written into the socket may take long to arrive, and closing the
 * connection meanwhile could lose it. How long we wait for it is bounded
 * by the write timeout (60 s), as for a response the client does not read. */
static void start_idle(struct http_conn *c)
{
	c->draining = true;
	c->drain_t0 = sh_mono_ns();
	arm(c, DRAIN_POLL_MS);
}

/* ---- responses ---- */

static void on_written(uv_write_t *w, int status)
{
	struct write_req *wr = (struct write_req *)w;
	struct http_conn *c = wr->c;
	if (status < 0 && !c->closing)
		conn_close(c); /* the client went away mid-write */
	if (wr->drained)
		wr->drained(wr->ud); /* on every status: the producer frees its state */
	buf_free(&wr->data);
	free(wr);
	if (!c->closing && c->close_after && !c->streaming &&
	    uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
		conn_close(c);
	else if (!c->closing && !c->streaming)
		process(c); /* the write queue drained: parse what waits */
	http_conn_unref(c);
}

static void log_request(struct http_conn *c, int status, size_t out)
{
	struct server *srv = c->srv;
	if (c->in_parser) {
		/* The bytes of this parser call are counted when it returns. */
		c->log_deferred = true;
		c->log_status = status;
		c->log_out = out;
		return;
	}
	const struct http_request *r = &c->req;
	int cls = status / 100;
	srv->stats.requests[r->route_id & 31][cls >= 1 && cls <= 5 ? cls : 0]++;
	if (srv->cfg.quiet)
		return;
	char when[32], dev[17] = "-";
	render_time_ms(sh_now_ms(), when);
	if (r->device)
		sh_device_fmt(r->device, dev);
	double ms = (double)(sh_mono_ns() - c->t0) / 1e6;
	/* Never the token, the query string or any report content. */
	fprintf(stderr,
		"%s method=%s route=%s status=%d in=%zu out=%zu ms=%.1f device=%s changes=%" PRIu32
		"\n",
		when, r->method_name ? r->method_name : "-", r->route ? r->route : "-", status,
		c->bytes_in, out, ms, dev, r->changes);
}

void http_add_header(struct http_conn *c, const char *line)
{
	size_t n = strlen(line);
	if (c->extra_len + n + 2 < sizeof(c->extra)) {
		memcpy(c->extra + c->extra_len, line, n);
		memcpy(c->extra + c->extra_len + n, "\r\n", 2);
		c->extra_len += n + 2;
	}
}

enum codec_enc http_accepted_encoding(const struct http_conn *c)
{
	return c->req.accept_gzip ? CODEC_GZIP : c->req.accept_deflate ? CODEC_DEFLATE
								: CODEC_IDENTITY;
}

bool http_compress(enum codec_enc enc, const uint8_t *body, size_t len, struct buf *out)
{
	if ((enc == CODEC_DEFLATE || enc == CODEC_GZIP) && len > 64 &&
	    codec_deflate(body, len, enc, 6, out) == 0 && out->len < len)
		return true;
	buf_free(out);
	return false;
}

void http_respond(struct http_conn *c, int status, const char *content_type,
		  const uint8_t *body, size_t len)
{
	http_respond_encoded(c, status, content_type, CODEC_AUTO, body, len);
}

void http_respond_encoded(struct http_conn *c, int status, const char *content_type,
			  enum codec_enc body_enc, const uint8_t *body, size_t len)
{
	if (c->responded)
		return;
	c->responded = true;
	struct server *srv = c->srv;
	release_inflight(c);
	resume_paused(srv);
	if (c->closing)
		return;

	/* A refusal before the body was read cannot keep the connection: the
	 * unread body would be taken for the next request. */
	if (c->state == CS_HEADERS && (c->req.content_length > 0 || c->req.chunked))
		c->close_after = true;
	bool keep = !c->close_after && !c->peer_eof && !srv->stopping && status < 500 &&
		    status != 400 && status != 408 && status != 413 && status != 429 &&
		    status != 431 &&
		    llhttp_should_keep_alive(&c->parser);
	if (!keep)
		c->close_after = true;

	struct write_req *wr = calloc(1, sizeof(*wr));
	if (!wr) {
		conn_close(c);
		return;
	}
	wr->c = c;
	const char *enc = NULL;
	struct buf packed = {0};
	if (body_enc == CODEC_AUTO) {
		body_enc = CODEC_IDENTITY;
		enum codec_enc e = http_accepted_encoding(c);
		if (content_type && !strcmp(content_type, "application/x-protobuf") &&
		    http_compress(e, body, len, &packed)) {
			body_enc = e;
			body = packed.data;
			len = packed.len;
		}
	}
	if (body_enc == CODEC_GZIP || body_enc == CODEC_DEFLATE)
		enc = body_enc == CODEC_GZIP ? "gzip" : "deflate";
	int r = buf_printf(&wr->data,
			   "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: %s\r\n"
			   "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
			   status, status_text(status), len, keep ? "keep-alive" : "close");
	if (r == 0 && content_type)
		r = buf_printf(&wr->data, "Content-Type: %s\r\n", content_type);
	if (r == 0 && enc)
		r = buf_printf(&wr->data, "Content-Encoding: %s\r\nVary: Accept-Encoding\r\n", enc);
	if (r == 0)
		r = buf_append(&wr->data, c->extra, c->extra_len);
	if (r == 0)
		r = buf_append(&wr->data, "\r\n", 2);
	if (r == 0 && c->req.method != HTTP_HEAD)
		r = buf_append(&wr->data, body, len);
	buf_free(&packed);
	log_request(c, status, len);
	if (r < 0) {
		buf_free(&wr->data);
		free(wr);
		conn_close(c);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)wr->data.data, (unsigned)wr->data.len);
	http_conn_ref(c);
	if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
		buf_free(&wr->data);
		free(wr);
		http_conn_unref(c);
		conn_close(c);
		return;
	}
	c->extra_len = 0;
	if (c->close_after) {
		/* Nothing more is read; the write callback closes. */
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
		arm(c, srv->cfg.write_timeout_ms);
		return;
	}
	c->state = CS_IDLE;
	start_idle(c);
	/* Between requests a connection holds no buffers: a thousand phones
	 * idling on keep-alive must cost next to nothing. */
	buf_free(&c->body);
	if (!c->pending.len)
		buf_free(&c->pending);
	if (!c->in_parser)
		process(c);
}

bool http_conn_gone(struct http_conn *c)
{
	return c->closing;
}

static int queue_write(struct http_conn *c, struct buf *data, void (*drained)(void *),
		       void *ud)
{
	struct write_req *wr = calloc(1, sizeof(*wr));
	if (!wr)
		return -ENOMEM;
	wr->c = c;
	wr->data = *data;
	wr->drained = drained;
	wr->ud = ud;
	*data = (struct buf){0};
	uv_buf_t b = uv_buf_init((char *)wr->data.data, (unsigned)wr->data.len);
	http_conn_ref(c);
	if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
		*data = wr->data;
		free(wr);
		http_conn_unref(c);
		return -EPIPE;
	}
	return 0;
}

int http_stream_start(struct http_conn *c, int status, const char *content_type)
{
	struct buf h = {0};
	if (c->closing)
		return -EPIPE;
	c->responded = true;
	c->streaming = true;
	c->stream_out = 0;
	release_inflight(c);
	int r = buf_printf(&h,
			   "HTTP/1.1 %d %s\r\nTransfer-Encoding: chunked\r\nContent-Type: %s\r\n"
			   "Connection: close\r\nCache-Control: no-store\r\n"
			   "X-Content-Type-Options: nosniff\r\n%.*s\r\n",
			   status, status_text(status), content_type, (int)c->extra_len, c->extra);
	c->close_after = true; /* one long response, then done */
	c->extra_len = 0;
	if (r == 0)
		r = queue_write(c, &h, NULL, NULL);
	buf_free(&h);
	return r;
}

int http_stream_write(struct http_conn *c, const uint8_t *p, size_t n,
		      void (*drained)(void *ud), void *ud)
{
	struct buf b = {0};
	if (c->closing)
		return -EPIPE;
	int r = buf_printf(&b, "%zx\r\n", n);
	if (r == 0)
		r = buf_append(&b, p, n);
	if (r == 0)
		r = buf_append(&b, "\r\n", 2);
	if (r == 0)
		r = queue_write(c, &b, drained, ud);
	if (r == 0) {
		c->stream_out += n;
		arm(c, c->srv->cfg.write_timeout_ms); /* a reader that stalls is dropped */
	}
	buf_free(&b);
	return r;
}

void http_stream_end(struct http_conn *c)
{
	struct buf b = {0};
	if (!c->streaming)
		return;
	log_request(c, 200, c->stream_out);
	c->streaming = false;
	if (c->closing)
		return;
	if (c->req.method == HTTP_HEAD)
		return; /* headers only: on_written closes once they have left */
	if (buf_puts(&b, "0\r\n\r\n") == 0 && queue_write(c, &b, NULL, NULL) == 0) {
		buf_free(&b);
		return; /* on_written closes (close_after) */
	}
	buf_free(&b);
	conn_close(c);
}

void http_error(struct http_conn *c, int status, const char *code, const char *message)
{
	char body[512];
	json_t *j = json_pack("{s:s,s:s}", "error", code, "message", message);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	snprintf(body, sizeof(body), "%s\n", s ? s : "{\"error\":\"internal\"}");
	free(s);
	json_decref(j);
	http_respond(c, status, "application/json", (const uint8_t *)body, strlen(body));
}

static void on_timer(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	if (c->responded && c->close_after) {
		conn_close(c); /* the client does not read its response */
		return;
	}
	uint64_t now = sh_mono_ns();
	switch (c->state) {
	case CS_IDLE:
		if (!c->draining) {
			conn_close(c); /* idle keep-alive */
		} else if (!unreceived(c)) {
			c->draining = false; /* received: the idle time starts now */
			arm(c, c->srv->cfg.idle_timeout_ms);
		} else if ((now - c->drain_t0) / 1000000 >= c->srv->cfg.write_timeout_ms) {
			conn_close(c); /* the client does not take its answer */
		} else {
			arm(c, DRAIN_POLL_MS);
		}
		break;
	case CS_HEADERS:
		if (!c->version_seen) {
			/* Not even a request line that says HTTP/1.x (it may be
			 * HTTP/0.9's "GET /"): nothing it could read. */
			conn_close(c);
			break;
		}
		c->close_after = true;
		http_error(c, 408, "header_timeout", "the request headers did not arrive in time");
		break;
	case CS_BODY: {
		/* Two limits: the whole body (--body-timeout), and a body that
		 * stops arriving (--body-stall), e.g. a phone that gave up. */
		uint64_t total = (now - c->body_t0) / 1000000, still = (now - c->body_last) / 1000000;
		const struct server_config *cfg = &c->srv->cfg;
		c->close_after = true;
		if (total >= cfg->body_timeout_ms) {
			http_error(c, 408, "body_timeout", "the request body did not arrive in time");
		} else if (still >= cfg->body_stall_ms) {
			http_error(c, 408, "body_stall", "the request body stopped arriving");
		} else {
			c->close_after = false;
			arm(c, (unsigned)SH_MIN(cfg->body_timeout_ms - total, cfg->body_stall_ms - still));
		}
		break;
	}
	default:
		conn_close(c);
		break;
	}
}

/* ---- parsing ---- */

static struct http_conn *conn_of(llhttp_t *p)
{
	return p->data;
}

static int count_header(struct http_conn *c, size_t n)
{
	c->header_bytes += n;
	if (c->header_bytes > c->srv->cfg.max_header) {
		c->error_status = 431;
		return HPE_USER;
	}
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct http_conn *c = conn_of(p);
	memset(&c->req, 0, sizeof(c->req));
	memcpy(c->req.peer, c->peer, 16);
	buf_reset(&c->url);
	buf_reset(&c->hval);
	buf_reset(&c->body);
	c->granted = false; /* its turn is taken */
	c->hname_len = 0;
	c->hcur = H_OTHER;
	c->header_bytes = 0;
	c->responded = false;
	c->expect_continue = false;
	c->error_status = 0;
	c->draining = false;
	c->version_seen = false;
	c->hval_open = false;
	if (c->state == CS_IDLE) {
		c->state = CS_HEADERS;
		c->t0 = sh_mono_ns();
		arm(c, c->srv->cfg.header_timeout_ms);
	}
	return 0;
}

static int on_version_complete(llhttp_t *p)
{
	conn_of(p)->version_seen = true;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = conn_of(p);
	if (count_header(c, n))
		return HPE_USER;
	return buf_append(&c->url, at, n) ? HPE_USER : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = conn_of(p);
	if (count_header(c, n))
		return HPE_USER;
	if (memchr(at, ' ', n) || memchr(at, '\t', n)) {
		c->error_status = 400; /* "Name :": RFC 9112 5.1 says refuse it */
		return HPE_USER;
	}
	size_t room = sizeof(c->hname) - 1 - c->hname_len;
	size_t take = n < room ? n : room;
	memcpy(c->hname + c->hname_len, at, take);
	c->hname_len += take;
	if (n > room)
		c->hname_len = sizeof(c->hname); /* too long to be one we read */
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct http_conn *c = conn_of(p);
	c->hcur = H_OTHER;
	if (c->hname_len < sizeof(c->hname)) {
		c->hname[c->hname_len] = 0;
		if (!strcasecmp(c->hname, "authorization"))
			c->hcur = H_AUTHORIZATION;
		else if (!strcasecmp(c->hname, "content-encoding"))
			c->hcur = H_CONTENT_ENCODING;
		else if (!strcasecmp(c->hname, "accept-encoding"))
			c->hcur = H_ACCEPT_ENCODING;
		else if (!strcasecmp(c->hname, "expect"))
			c->hcur = H_EXPECT;
		else if (!strcasecmp(c->hname, "x-forwarded-for"))
			c->hcur = H_FORWARDED_FOR;
	}
	c->hname_len = 0;
	buf_reset(&c->hval);
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = conn_of(p);
	if (count_header(c, n))
		return HPE_USER;
	/* obs-fold (RFC 9112 5.2): one header over two lines. llhttp hands
	 * over the second line as another piece of the value; a piece that
	 * does not start where the last one ended has a line break between. */
	if ((c->hval_open && at != c->hval_next) || memchr(at, '\n', n) || memchr(at, '\r', n)) {
		c->error_status = 400;
		return HPE_USER;
	}
	c->hval_open = true;
	c->hval_next = at + n;
	if (c->hcur == H_OTHER)
		return 0;
	return buf_append(&c->hval, at, n) ? HPE_USER : 0;
}

static bool has_token(const char *list, size_t len, const char *tok)
{
	/* "gzip, deflate;q=0.5" style lists; q=0 means refused. */
	size_t tl = strlen(tok), i = 0;
	while (i < len) {
		while (i < len && (list[i] == ' ' || list[i] == ','))
			i++;
		size_t s = i;
		while (i < len && list[i] != ',' && list[i] != ';' && list[i] != ' ')
			i++;
		bool match = i - s == tl && !strncasecmp(list + s, tok, tl);
		bool zero = false;
		while (i < len && list[i] != ',') {
			if (list[i] == '=' && i + 1 < len && list[i + 1] == '0' &&
			    (i + 2 >= len || list[i + 2] == ',' || list[i + 2] == ' ' ||
			     (list[i + 2] == '.' && (i + 3 >= len || list[i + 3] == '0'))))
				zero = true;
			i++;
		}
		if (match && !zero)
			return true;
	}
	return false;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct http_conn *c = conn_of(p);
	c->hval_open = false;
	const char *v = (const char *)c->hval.data;
	size_t n = c->hval.len;
	switch (c->hcur) {
	case H_AUTHORIZATION:
		if (n > 7 && !strncasecmp(v, "Bearer ", 7)) {
			v += 7;
			n -= 7;
			while (n && *v == ' ') {
				v++;
				n--;
			}
			if (n > HTTP_MAX_TOKEN) {
				c->req.token_too_long = true;
			} else {
				memcpy(c->req.token, v, n);
				c->req.token[n] = 0;
			}
		}
		break;
	case H_CONTENT_ENCODING:
		if (codec_enc_parse(v ? v : "", n, &c->req.enc) < 0)
			c->req.enc_unsupported = true;
		break;
	case H_ACCEPT_ENCODING:
		c->req.accept_gzip = has_token(v, n, "gzip");
		c->req.accept_deflate = has_token(v, n, "deflate");
		break;
	case H_EXPECT:
		c->expect_continue = n == 12 && !strncasecmp(v, "100-continue", 12);
		break;
	case H_FORWARDED_FOR:
		/* Only a proxy on this machine that we were told to trust may say
		 * who the client is; its last hop is the one it saw. */
		if (c->srv->cfg.trust_proxy && c->peer_loopback && n && n < 256) {
			char ip[256];
			const char *last = memrchr(v, ',', n);
			last = last ? last + 1 : v;
			snprintf(ip, sizeof(ip), "%.*s", (int)(n - (size_t)(last - v)), last);
			char *ipp = ip;
			while (*ipp == ' ')
				ipp++;
			struct in6_addr a6;
			struct in_addr a4;
			if (inet_pton(AF_INET6, ipp, &a6) == 1) {
				memcpy(c->req.peer, &a6, 16);
			} else if (inet_pton(AF_INET, ipp, &a4) == 1) {
				memset(c->req.peer, 0, 10);
				memset(c->req.peer + 10, 0xff, 2);
				memcpy(c->req.peer + 12, &a4, 4);
			}
		}
		break;
	default:
		break;
	}
	c->hcur = H_OTHER;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct http_conn *c = conn_of(p);
	struct server *srv = c->srv;
	if (!c->version_seen) {
		c->error_status = 9; /* "GET /" and no version: HTTP/0.9 */
		return HPE_USER;
	}
	if (buf_putc(&c->url, 0) < 0)
		return HPE_USER;
	char *url = (char *)c->url.data;
	char *q = strchr(url, '?');
	if (q)
		*q++ = 0;
	c->req.path = url;
	c->req.query = q ? q : "";
	c->req.method = llhttp_get_method(p);
	c->req.method_name = llhttp_method_name(c->req.method);
	c->req.has_length = (p->flags & F_CONTENT_LENGTH) != 0;
	c->req.content_length = c->req.has_length ? p->content_length : 0;
	c->req.chunked = (p->flags & F_CHUNKED) != 0;
	bool has_body = c->req.content_length > 0 || c->req.chunked;

	routes_on_headers(c, &c->req);
	if (c->responded)
		return has_body ? HPE_PAUSED : 0; /* refused: a body is not read */
	if (has_body && c->req.content_length > c->req.body_limit) {
		c->close_after = true;
		char msg[128];
		snprintf(msg, sizeof(msg), "request bodies on this route are limited to %zu bytes",
			 c->req.body_limit);
		http_error(c, 413, "body_too_large", msg);
		return HPE_PAUSED;
	}
	/* The claimed length is charged as it arrives (on_body), never up
	 * front: a claim of 16 MiB trickling a byte a second holds a byte a
	 * second. */
	if (c->req.content_length &&
	    buf_reserve(&c->body, (size_t)SH_MIN(c->req.content_length, (uint64_t)READ_CHUNK)) < 0)
		return HPE_USER;
	if (has_body) {
		c->state = CS_BODY;
		c->body_t0 = c->body_last = sh_mono_ns();
		arm(c, SH_MIN(srv->cfg.body_timeout_ms, srv->cfg.body_stall_ms));
		if (c->expect_continue) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
			uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		}
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = conn_of(p);
	if (c->body.len + n > c->req.body_limit) {
		c->error_status = 413; /* chunked bodies have no length up front */
		return HPE_USER;
	}
	c->body_last = sh_mono_ns();
	if (!c->inflight)
		c->inflight_dev = c->req.device;
	if (!admit_charge(c->srv->http->admit, c->inflight_dev, n)) {
		c->error_status = 429; /* this device holds its share already */
		return HPE_USER;
	}
	c->inflight += n;
	if (buf_append(&c->body, at, n) < 0)
		return HPE_USER;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct http_conn *c = conn_of(p);
	if (c->responded)
		return HPE_PAUSED; /* refused at its headers, already answered */
	c->state = CS_BUSY;
	uv_timer_stop(&c->timer);
	c->req.body = c->body.data;
	c->req.body_len = c->body.len;
	routes_on_request(c, &c->req);
	/* One request at a time: the next pipelined one waits. */
	return HPE_PAUSED;
}

static void parse_error(struct http_conn *c, llhttp_errno_t err)
{
	c->close_after = true;
	if (c->responded)
		return;
	if (c->error_status == 9) {
		conn_close(c); /* HTTP/0.9 could not read an HTTP/1.1 answer */
		return;
	}
	if (c->error_status == 431)
		http_error(c, 431, "headers_too_large", "the request line and headers are too large");
	else if (c->error_status == 400)
		http_error(c, 400, "bad_request",
			   "a header is folded over two lines or has whitespace before its colon");
	else if (c->error_status == 413)
		http_error(c, 413, "body_too_large", "the request body is too large");
	else if (c->error_status == 429) {
		http_add_header(c, "Retry-After: 30");
		http_error(c, 429, "too_many_uploads",
			   "this device's uploads in progress hold their share of the server; "
			   "finish or drop one and try again");
	}
	else if (err == HPE_USER)
		http_error(c, 500, "internal", "out of memory");
	else
		http_error(c, 400, "bad_request", llhttp_errno_name(err));
}

/* Parses what is pending, one request at a time. */
static void process(struct http_conn *c)
{
	while (c->pending.len && !c->closing && !c->close_after && c->state != CS_BUSY &&
	       uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_QUEUE_CAP) {
		/* A new request waits, unparsed, while the server is overloaded:
		 * a thousand phones connecting at once each have a request in
		 * the first read, and starting them all would hold a thousand
		 * decoded batches. */
		if (c->state == CS_IDLE && overloaded(c->srv) &&
		    (reads_overloaded(c->srv) || next_is_read(c) != 1)) {
			pause_by_server(c);
			break;
		}
		const char *data = (const char *)c->pending.data;
		if (c->state == CS_IDLE)
			c->bytes_in = 0; /* a new request starts with these bytes */
		/* A value cut by the end of the last read goes on at the start of
		 * this one; one whose line ended there may not go on at all. */
		if (c->hval_open)
			c->hval_next = c->hval_next == c->exec_end ? data : NULL;
		c->exec_end = data + c->pending.len;
		c->in_parser = true;
		llhttp_errno_t err = llhttp_execute(&c->parser, data, c->pending.len);
		c->in_parser = false;
		size_t used = c->pending.len;
		if (err == HPE_PAUSED) {
			used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
			llhttp_resume(&c->parser);
		} else if (err != HPE_OK) {
			c->bytes_in += c->pending.len;
			c->pending.len = 0;
			if (c->log_deferred) {
				c->log_deferred = false;
				log_request(c, c->log_status, c->log_out);
			}
			parse_error(c, err);
			break;
		}
		c->bytes_in += used;
		if (c->log_deferred) {
			c->log_deferred = false;
			log_request(c, c->log_status, c->log_out);
		}
		memmove(c->pending.data, c->pending.data + used, c->pending.len - used);
		c->pending.len -= used;
	}
	/* Reads land in the shared buffer first: what was parsed need not
	 * stay allocated while the request is decoded and committed. */
	if (!c->pending.len)
		buf_free(&c->pending);
	update_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* Whether a connection must leave its next request in the socket while
 * the server is overloaded. A body being read is already counted, and
 * pausing it could wait on itself. */
static bool must_wait(struct http_conn *c)
{
	if (c->admitted)
		return false; /* its place is kept */
	if (c->state == CS_BODY ||
	    !((c->srv->http->paused && !c->granted) || overloaded(c->srv)))
		return false;
	if (reads_overloaded(c->srv))
		return true;
	/* Nothing arrived yet: keep listening, on_alloc decides when it does
	 * (a push then waits in the kernel, a read goes ahead). */
	return next_is_read(c) == 0;
}

static void on_resume_timer(uv_timer_t *t)
{
	struct server *srv = t->data;
	resume_paused(srv);
	if (!srv->http->paused)
		uv_timer_stop(t);
}

static void pause_by_server(struct http_conn *c)
{
	/* Whatever would resume it (a request finishing, a connection
	 * closing), a timer looks again at those waiting until none is: a
	 * place freed by a request that went nowhere near the queue (an
	 * error, /healthz) must not leave them waiting for good. */
	struct http_server *h = c->srv->http;
	if (h->resume_timer_open && !uv_is_active((uv_handle_t *)&h->resume_timer))
		uv_timer_start(&h->resume_timer, on_resume_timer, 20, 20);
	if (!c->paused_by_server)
		c->srv->stats.reads_paused++;
	c->granted = false;
	unadmit(c);
	c->srv->http->paused = true;
	c->paused_by_server = true;
	/* Waiting on us is not the client's fault: no 408 meanwhile. */
	if (c->state == CS_HEADERS)
		uv_timer_stop(&c->timer);
}

static void update_reading(struct http_conn *c)
{
	struct server *srv = c->srv;
	bool want = !c->closing && !c->close_after && c->state != CS_BUSY && !c->peer_eof &&
		    c->pending.len < READ_CHUNK;
	/* Pause between requests only: a body being read is already counted,
	 * and pausing it could wait on itself. */
	if (want && must_wait(c)) {
		pause_by_server(c);
		want = false;
	}
	if (want && !c->reading) {
		if (c->state == CS_HEADERS)
			arm(c, srv->cfg.header_timeout_ms);
		c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	if (!want)
		unadmit(c); /* it will not read now: the place goes back */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct http_conn *c = h->data;
	(void)suggested;
	/* Readiness for many sockets comes in one poll: those whose turn comes
	 * after the server became overloaded read nothing (on_read then sees
	 * UV_ENOBUFS), so a thousand waiting requests stay in the kernel's
	 * socket buffers instead of in ours. */
	if (!c->pending.len && must_wait(c)) {
		*b = uv_buf_init(NULL, 0);
		return;
	}
	*b = uv_buf_init(c->srv->http->buf, READ_CHUNK);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct http_conn *c = s->data;
	if (nread > 0) {
		unadmit(c); /* read: the request is counted from here on */
		if (buf_append(&c->pending, b->base, (size_t)nread) < 0) {
			conn_close(c);
			return;
		}
		process(c);
		return;
	}
	if (nread == 0)
		return; /* EAGAIN: nothing to do */
	if (nread == UV_ENOBUFS) {
		uv_read_stop(s); /* on_alloc declined: resume_paused reads it */
		c->reading = false;
		pause_by_server(c);
		c->has_data = true;
		return;
	}
	if (nread == UV_EOF) {
		/* A client may half-close after sending its request: it still
		 * gets its response. Anything else ends here. */
		c->peer_eof = true;
		uv_read_stop(s);
		c->reading = false;
		if (c->state == CS_BUSY) {
			c->close_after = true;
			return;
		}
	}
	/* UV_EOF before a request was whole, UV_ECONNRESET, other errors.
	 * An upload cut mid-body still gets its log line (499, as nginx
	 * says: the client went away). */
	if (c->state == CS_BODY && !c->responded)
		log_request(c, 499, 0);
	conn_close(c);
}

static void on_refused_written(uv_write_t *w, int status)
{
	(void)status;
	uv_close((uv_handle_t *)w->handle, (uv_close_cb)free);
	free(w);
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct server *srv = listener->data;
	struct http_server *h = srv->http;
	if (status < 0)
		return;
	if (h->n_conns >= srv->cfg.max_conns || srv->stopping) {
		/* Refuse politely and at once; never queue unbounded. */
		uv_tcp_t *t = malloc(sizeof(*t));
		uv_write_t *w = malloc(sizeof(*w));
#define BUSY_BODY "{\"error\":\"too_many_connections\",\"message\":\"try again shortly\"}\n"
		static const char busy[] =
			"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			"Retry-After: 5\r\nConnection: close\r\nContent-Length: 63\r\n\r\n" BUSY_BODY;
		_Static_assert(sizeof(BUSY_BODY) - 1 == 63, "Content-Length of the 503 body");
		srv->stats.conns_refused++;
		if (!t || !w || uv_tcp_init(srv->loop, t) < 0) {
			free(t);
			free(w);
			return;
		}
		if (uv_accept(listener, (uv_stream_t *)t) < 0) {
			free(w);
			uv_close((uv_handle_t *)t, (uv_close_cb)free);
			return;
		}
		uv_buf_t b = uv_buf_init((char *)busy, sizeof(busy) - 1);
		if (uv_write(w, (uv_stream_t *)t, &b, 1, on_refused_written) < 0) {
			free(w);
			uv_close((uv_handle_t *)t, (uv_close_cb)free);
		}
		return;
	}
	struct http_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->srv = srv;
	c->refs = 1;
	uv_tcp_init(srv->loop, &c->tcp);
	uv_timer_init(srv->loop, &c->timer);
	c->open_handles = 2;
	c->tcp.data = c->timer.data = c;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
		c->closing = true;
		c->refs = 0;
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	struct sockaddr_storage ss;
	int slen = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &slen) == 0) {
		if (ss.ss_family == AF_INET6) {
			memcpy(c->peer, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
			static const uint8_t lo6[16] = {[15] = 1};
			c->peer_loopback = !memcmp(c->peer, lo6, 16) ||
					   (c->peer[10] == 0xff && c->peer[11] == 0xff && c->peer[12] == 127);
		} else {
			memset(c->peer + 10, 0xff, 2);
			memcpy(c->peer + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
			c->peer_loopback = c->peer[12] == 127;
		}
	}
	llhttp_init(&c->parser, HTTP_REQUEST, &h->settings);
	c->parser.data = c;
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	h->n_conns++;
	srv->stats.conns_open = h->n_conns;
	srv->stats.conns_total++;
	c->state = CS_IDLE;
	arm(c, srv->cfg.idle_timeout_ms);
	update_reading(c);
}

/* ---- listening ---- */

static int parse_listen(const char *s, struct sockaddr_storage *ret, bool *ret_loopback)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || strlen(colon + 1) == 0 || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (n < 3 || host[n - 1] != ']')
			return -EINVAL;
		memmove(host, host + 1, n - 2);
		host[n - 2] = 0;
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ret;
		if (uv_ip6_addr(host, (int)port, a) < 0)
			return -EINVAL;
		static const uint8_t lo[16] = {[15] = 1};
		*ret_loopback = !memcmp(&a->sin6_addr, lo, 16);
		return 0;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ret;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	if (uv_ip4_addr(host, (int)port, a) < 0)
		return -EINVAL;
	*ret_loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	return 0;
}

int http_start(struct server *srv)
{
	struct http_server *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	srv->http = h;
	size_t share = SH_MAX(srv->cfg.max_body, srv->cfg.max_inflight / 4);
	int r = admit_new(srv->cfg.max_inflight, share, srv->cfg.max_conns, &h->admit);
	if (r < 0)
		return r;
	llhttp_settings_init(&h->settings);
	h->settings.on_message_begin = on_message_begin;
	h->settings.on_url = on_url;
	h->settings.on_version_complete = on_version_complete;
	h->settings.on_header_field = on_header_field;
	h->settings.on_header_field_complete = on_header_field_complete;
	h->settings.on_header_value = on_header_value;
	h->settings.on_header_value_complete = on_header_value_complete;
	h->settings.on_headers_complete = on_headers_complete;
	h->settings.on_body = on_body;
	h->settings.on_message_complete = on_message_complete;

	struct sockaddr_storage addr;
	bool loopback = false;
	if (parse_listen(srv->cfg.listen, &addr, &loopback) < 0) {
		fprintf(stderr, "shahidi-server: --listen %s: expected HOST:PORT or [V6]:PORT\n",
			srv->cfg.listen);
		return -EINVAL;
	}
	if (!loopback && !srv->cfg.allow_plaintext) {
		fprintf(stderr,
			"shahidi-server: refusing to serve plain HTTP on %s, beyond this machine.\n"
			"Put TLS in front (see tools/nginx-shahidi.conf) and listen on loopback,\n"
			"or pass --allow-plaintext if the network is otherwise protected.\n",
			srv->cfg.listen);
		return -EPERM;
	}
	r = uv_timer_init(srv->loop, &h->resume_timer);
	if (r < 0)
		return r;
	h->resume_timer.data = srv;
	h->resume_timer_open = true;
	if ((r = uv_tcp_init(srv->loop, &h->listener)) < 0)
		return r;
	h->listener.data = srv;
	h->listening = true;
	if ((r = uv_tcp_bind(&h->listener, (struct sockaddr *)&addr, 0)) < 0 ||
	    (r = uv_listen((uv_stream_t *)&h->listener, 511, on_connection)) < 0) {
		fprintf(stderr, "shahidi-server: cannot listen on %s: %s\n", srv->cfg.listen,
			uv_strerror(r));
		return r;
	}
	struct sockaddr_storage bound;
	int len = sizeof(bound);
	char ip[64] = "?";
	uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &len);
	int port = 0;
	if (bound.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
		port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
		printf("listening on http://[%s]:%d\n", ip, port);
	} else {
		uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
		port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
		printf("listening on http://%s:%d\n", ip, port);
	}
	fflush(stdout);
	return 0;
}

void http_stop(struct server *srv)
{
	struct http_server *h = srv->http;
	if (!h)
		return;
	if (h->listening) {
		uv_close((uv_handle_t *)&h->listener, NULL);
		h->listening = false;
	}
	if (h->resume_timer_open) {
		uv_close((uv_handle_t *)&h->resume_timer, NULL);
		h->resume_timer_open = false;
	}
	struct http_conn *c = h->conns;
	while (c) {
		struct http_conn *next = c->next;
		if (c->state == CS_BUSY)
			c->close_after = true; /* its acknowledgement is on its way */
		else
			conn_close(c);
		c = next;
	}
}

/* Decodes %XX and '+' in a query value, in place. */
static void url_decode(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (*s == '+') {
			*o++ = ' ';
		} else if (*s == '%' && s[1] && s[2]) {
			char hex[3] = {s[1], s[2], 0};
			*o++ = (char)strtol(hex, NULL, 16);
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

bool http_query_get(const char *q, const char *name, char *out, size_t len)
{
	size_t nl = strlen(name);
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t seg = amp ? (size_t)(amp - q) : strlen(q);
		if (seg > nl && !strncmp(q, name, nl) && q[nl] == '=') {
			snprintf(out, len, "%.*s", (int)(seg - nl - 1), q + nl + 1);
			url_decode(out);
			return true;
		}
		q = amp ? amp + 1 : NULL;
	}
	return false;
}

void http_kick(struct server *srv)
{
	resume_paused(srv);
}

int http_port(const struct server *srv)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (!srv->http || uv_tcp_getsockname(&srv->http->listener, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
}

unsigned http_conns(const struct server *srv)
{
	return srv->http ? srv->http->n_conns : 0;
}

void http_free(struct server *srv)
{
	if (srv->http)
		admit_free(srv->http->admit);
	free(srv->http);
	srv->http = NULL;
}
