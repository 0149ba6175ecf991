#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include "admit.h"
#include "common.h"
#include "http_int.h"
#include "peer.h"
#include "server.h"

/* ---- connection life ---- */

static void conn_free(struct http_conn *c)
{
	buf_free(&c->url);
	buf_free(&c->hval);
	buf_free(&c->body);
	buf_free(&c->pending);
	free(c);
}

void http__release_inflight(struct http_conn *c)
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

void http__conn_close(struct http_conn *c)
{
	if (c->closing)
		return;
	struct server *srv = c->srv;
	struct http_server *h = srv->http;
	c->closing = true;
	http__body_abort(c);
	http__release_inflight(c);
	http__unadmit(c);
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
	http__resume_paused(srv);
}

/* ---- backpressure ---- */

bool http__overloaded(struct server *srv)
{
	struct http_server *h = srv->http;
	return admit_full(h->admit) || h->handlers->overloaded(srv, true, h->admitted);
}

/* Requests other than pushes have places of their own: pushes waiting
 * for the writer do not hold back /healthz, pulls or the office. */
bool http__others_overloaded(struct server *srv)
{
	return srv->http->handlers->overloaded(srv, false, 0);
}

/* Whether the request c is about to read is a push: 1 yes, 0 no, -1
 * nothing (or too little) has arrived to tell. Looks at what is parsed,
 * or unparsed, or peeks at the socket without taking anything from it. */
int http__next_is_push(struct http_conn *c)
{
	if (c->state == CS_HEADERS && c->header_bytes) {
		if (llhttp_get_method(&c->parser) != HTTP_POST)
			return 0;
		static const char path[] = "/v1/push";
		size_t n = SH_MIN(c->url.len, sizeof(path) - 1);
		if (!n)
			return -1;
		return memcmp(c->url.data, path, n) ? 0 : 1; /* a prefix counts: it may be */
	}
	if (c->pending.len)
		return admit_is_push((const char *)c->pending.data, c->pending.len);
	uv_os_fd_t fd;
	char b[13];
	if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) < 0)
		return 1;
	ssize_t n = recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
	if (n <= 0)
		return -1;
	return admit_is_push(b, (size_t)n);
}

void http__unadmit(struct http_conn *c)
{
	if (c->admitted) {
		c->admitted = false;
		c->srv->http->admitted--;
	}
}

void http__resume_paused(struct server *srv)
{
	struct http_server *h = srv->http;
	if (!h || !h->paused || http__overloaded(srv))
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
			 * takes its place at once, in http__process(). */
			if (c->has_data) {
				c->admitted = true;
				h->admitted++;
			}
			c->has_data = false;
			if (c->pending.len && c->state == CS_IDLE)
				http__process(c); /* a request read while we were overloaded */
			else
				http__update_reading(c);
			if (http__overloaded(srv)) {
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

void http__arm(struct http_conn *c, unsigned ms)
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
void http__start_idle(struct http_conn *c)
{
	c->draining = true;
	c->drain_t0 = sh_mono_ns();
	http__arm(c, DRAIN_POLL_MS);
}

static void on_timer(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	if (c->responded && c->close_after) {
		http__conn_close(c); /* the client does not read its response */
		return;
	}
	uint64_t now = sh_mono_ns();
	switch (c->state) {
	case CS_IDLE:
		if (!c->draining) {
			http__conn_close(c); /* idle keep-alive */
		} else if (!unreceived(c)) {
			c->draining = false; /* received: the idle time starts now */
			http__arm(c, c->srv->cfg.idle_timeout_ms);
		} else if ((now - c->drain_t0) / 1000000 >= c->srv->cfg.write_timeout_ms) {
			http__conn_close(c); /* the client does not take its answer */
		} else {
			http__arm(c, DRAIN_POLL_MS);
		}
		break;
	case CS_HEADERS:
		if (!c->version_seen) {
			/* Not even a request line that says HTTP/1.x (it may be
			 * HTTP/0.9's "GET /"): nothing it could read. */
			http__conn_close(c);
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
		/* A streamed body (a file over 2G) may take long; it may not stop. */
		unsigned limit = c->req.body_sink ? UINT_MAX : cfg->body_timeout_ms;
		if (total >= limit) {
			http_error(c, 408, "body_timeout", "the request body did not arrive in time");
		} else if (still >= cfg->body_stall_ms) {
			http_error(c, 408, "body_stall", "the request body stopped arriving");
		} else {
			c->close_after = false;
			http__arm(c, (unsigned)SH_MIN(limit - total, cfg->body_stall_ms - still));
		}
		break;
	}
	default:
		http__conn_close(c);
		break;
	}
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
	    !((c->srv->http->paused && !c->granted) || http__overloaded(c->srv)))
		return false;
	if (http__others_overloaded(c->srv))
		return true;
	/* Nothing arrived yet: keep listening, on_alloc decides when it does
	 * (a push then waits in the kernel, a read goes ahead). */
	return http__next_is_push(c) == 1;
}

static void on_resume_timer(uv_timer_t *t)
{
	struct server *srv = t->data;
	http__resume_paused(srv);
	if (!srv->http->paused)
		uv_timer_stop(t);
}

void http__pause_by_server(struct http_conn *c)
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
	http__unadmit(c);
	c->srv->http->paused = true;
	c->paused_by_server = true;
	/* Waiting on us is not the client's fault: no 408 meanwhile. */
	if (c->state == CS_HEADERS)
		uv_timer_stop(&c->timer);
}

void http__update_reading(struct http_conn *c)
{
	struct server *srv = c->srv;
	bool want = !c->closing && !c->close_after && c->state != CS_BUSY && !c->peer_eof &&
		    !c->upload_held &&
		    c->pending.len < READ_CHUNK;
	/* Pause between requests only: a body being read is already counted,
	 * and pausing it could wait on itself. */
	if (want && must_wait(c)) {
		http__pause_by_server(c);
		want = false;
	}
	if (want && !c->reading) {
		if (c->state == CS_HEADERS)
			http__arm(c, srv->cfg.header_timeout_ms);
		c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	if (!want)
		http__unadmit(c); /* it will not read now: the place goes back */
}

/* Requests being answered (pushes, pulls, the office, /metrics): uploads
 * give way. */
static bool others_waiting(const struct server *srv)
{
	return srv->busy > 0;
}

/* Whether an upload's body may read now, and how much: not while others
 * wait (but a budget every UPLOAD_HOLD_MS), at most what is left of this
 * iteration's budget, and only once in a round (see struct http_server).
 * 0: it waits for a later iteration. */
static size_t upload_may_read(struct http_conn *c)
{
	struct http_server *h = c->srv->http;
	bool reading_now = c->upload_iter == h->iter; /* its read goes on */
	if (!reading_now && others_waiting(c->srv) &&
	    uv_now(c->srv->loop) < h->upload_next_ms) {
		c->upload_hold = true;
		c->srv->stats.upload_deferred_others++;
		return 0;
	}
	if (h->upload_read >= UPLOAD_READ_BUDGET) {
		c->srv->stats.upload_deferred_budget++;
		return 0;
	}
	if (!reading_now && c->upload_round == h->upload_round) {
		c->srv->stats.upload_deferred_round++; /* its turn in this round is over */
		return 0;
	}
	c->upload_iter = h->iter;
	c->upload_round = h->upload_round;
	return SH_MIN((size_t)READ_CHUNK, UPLOAD_READ_BUDGET - h->upload_read);
}

/* Uploads stopped while others wait read again. */
static void uploads_release(struct http_server *h)
{
	h->uploads_stopped = false;
	uv_timer_stop(&h->hold_timer);
	for (struct http_conn *c = h->conns; c; c = c->next)
		if (c->upload_held) {
			c->upload_held = false;
			http__update_reading(c);
		}
}

static void on_hold_timer(uv_timer_t *t)
{
	uploads_release(t->data);
}

/* An upload that is to wait for others stops reading (left readable, its
 * socket would wake every poll at once) until UPLOAD_HOLD_MS after the
 * uploads' last read, or until nobody waits. */
static void upload_stop(struct http_conn *c)
{
	struct http_server *h = c->srv->http;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = false;
	c->upload_held = true;
	h->uploads_stopped = true;
	if (!uv_is_active((uv_handle_t *)&h->hold_timer)) {
		uint64_t now = uv_now(c->srv->loop);
		uv_timer_start(&h->hold_timer, on_hold_timer,
			       h->upload_next_ms > now ? h->upload_next_ms - now : 0, 0);
	}
}

/* Before each poll: a new iteration, and a new round once an iteration
 * ended with budget left (everyone ready to read has had a turn; a slow
 * upload alone reads at every iteration). */
static void on_turn(uv_prepare_t *p)
{
	struct http_server *h = p->data;
	struct server *srv = h->turn_srv;
	if (h->upload_read < UPLOAD_READ_BUDGET)
		h->upload_round++;
	if (h->upload_read && others_waiting(srv))
		h->upload_next_ms = uv_now(srv->loop) + UPLOAD_HOLD_MS;
	if (h->uploads_stopped && !others_waiting(srv))
		uploads_release(h);
	h->upload_read = 0;
	h->iter++;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct http_conn *c = h->data;
	(void)suggested;
	if (c->state == CS_BODY && c->body_streamed && !c->pending.len) {
		c->upload_hold = false;
		size_t n = upload_may_read(c);
		c->upload_deferred = n == 0;
		*b = uv_buf_init(n ? c->srv->http->buf : NULL, (unsigned)n);
		return;
	}
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
		http__unadmit(c); /* read: the request is counted from here on */
		http__process_read(c, b->base, (size_t)nread);
		return;
	}
	if (nread == 0)
		return; /* EAGAIN: nothing to do */
	if (nread == UV_ENOBUFS && c->upload_deferred) {
		c->upload_deferred = false;
		if (c->upload_hold)
			upload_stop(c);
		return; /* still readable: the next iteration reads it */
	}
	if (nread == UV_ENOBUFS) {
		uv_read_stop(s); /* on_alloc declined: resume_paused reads it */
		c->reading = false;
		http__pause_by_server(c);
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
		http__log_request(c, 499, 0);
	http__conn_close(c);
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
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &slen) == 0)
		c->peer_loopback = peer_address((struct sockaddr *)&ss, c->peer);
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
	http__arm(c, srv->cfg.idle_timeout_ms);
	http__update_reading(c);
}

/* ---- listening ---- */

int http_start(struct server *srv, const struct http_handlers *handlers)
{
	struct http_server *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	srv->http = h;
	h->handlers = handlers;
	size_t share = SH_MAX(srv->cfg.max_body, srv->cfg.max_inflight / 4);
	int r = admit_new(srv->cfg.max_inflight, share, srv->cfg.max_conns, &h->admit);
	if (r < 0)
		return r;
	http__parser_settings(&h->settings);

	struct sockaddr_storage addr;
	char err[512];
	if ((r = peer_listen_addr(srv->cfg.listen, srv->cfg.allow_plaintext, &addr, err,
				  sizeof(err))) < 0) {
		fprintf(stderr, "shahidi-server: %s\n", err);
		return r;
	}
	r = uv_timer_init(srv->loop, &h->resume_timer);
	if (r < 0)
		return r;
	h->resume_timer.data = srv;
	h->resume_timer_open = true;
	if ((r = uv_prepare_init(srv->loop, &h->turn)) < 0)
		return r;
	h->turn.data = h;
	h->turn_srv = srv;
	h->turn_open = true;
	h->upload_round = 1; /* a connection's 0: it has not read in any */
	uv_prepare_start(&h->turn, on_turn);
	uv_unref((uv_handle_t *)&h->turn); /* it keeps nothing running */
	if ((r = uv_timer_init(srv->loop, &h->hold_timer)) < 0)
		return r;
	h->hold_timer.data = h;
	h->hold_timer_open = true;
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
	if (h->turn_open) {
		uv_close((uv_handle_t *)&h->turn, NULL);
		h->turn_open = false;
	}
	if (h->hold_timer_open) {
		uv_close((uv_handle_t *)&h->hold_timer, NULL);
		h->hold_timer_open = false;
	}
	struct http_conn *c = h->conns;
	while (c) {
		struct http_conn *next = c->next;
		if (c->state == CS_BUSY)
			c->close_after = true; /* its acknowledgement is on its way */
		else
			http__conn_close(c);
		c = next;
	}
}

void http_kick(struct server *srv)
{
	http__resume_paused(srv);
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
