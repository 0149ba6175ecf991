/* loadgen_net: every simulated device on one libuv loop, each with one
 * keep-alive HTTP/1.1 connection, responses parsed with llhttp.
 *
 * A device sends one request at a time, as a phone does: a batch, wait for
 * its acknowledgement, the next batch. Device 0 sends its first batch (the
 * shared records) alone; the others start when it is acknowledged, since
 * their shared edits are edits of records they have seen. When every
 * device has pushed (or the time is up), every device pulls its feed to the
 * end. The push phase is what the throughput figures measure; the pulls
 * come after it so that they do not share its clock.
 *
 * A request that fails (connection refused or reset, no answer in time,
 * 5xx, 429, 408) is sent again after a backoff, with the same bytes: the
 * server answers a batch it has seen as it did the first time. An attempt
 * that was written whole and never answered leaves its batch in doubt until
 * some later attempt is answered.
 */
#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <uv.h>

#include "codec.h"
#include "common.h"
#include "gen.h"
#include "loadgen.h"
#include "shahidi.pb-c.h"

#define READ_CHUNK (64 * 1024)
#define MAX_RESPONSE ((size_t)64 << 20) /* a pull answer is ~4 MiB at most */
#define PULL_LIMIT 1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define SAMPLE_MS 100

enum phase {
	PH_PUSH,
	PH_PULL_WAIT, /* pushed; waiting for the others before pulling */
	PH_PULL,
	PH_DONE,
};

enum req_kind {
	REQ_NONE,
	REQ_PUSH,
	REQ_PULL,
};

struct lg_net {
	uv_loop_t loop;
	uv_timer_t sampler;       /* the server's RSS */
	uv_signal_t sigint;       /* stop sending new batches */
	bool sampler_on, sigint_on;
	llhttp_settings_t settings;
	struct lg_run *run;
	uint64_t deadline_ns;      /* no new batch after it */
	uint64_t hard_deadline_ns; /* no retry after it */
	bool gate_open;            /* device 0's first batch is answered */
	bool push_started;
	bool refused;              /* the server answered 503 */
	uint64_t next_slot_ns;     /* --rate: when the next batch may go */
	unsigned pushing;          /* devices still in PH_PUSH */
	unsigned active;           /* devices not PH_DONE */
	double cpu0, self_cpu0, steal0;
	char rbuf[READ_CHUNK];     /* one read buffer: parsing is synchronous */
};

struct lg_conn {
	struct lg_device *d;
	struct lg_net *net;
	uv_tcp_t tcp;
	uv_timer_t timer;          /* request timeout, then backoff */
	uv_connect_t connect;
	uv_write_t write;
	llhttp_t parser;
	enum phase phase;
	bool tcp_open;             /* initialised, close callback not yet run */
	bool tcp_closing;
	bool connected;
	bool send_on_close;        /* send the current request once closed */
	bool in_flight;            /* the current request awaits its answer */
	bool written;              /* this attempt was written whole */
	bool doubt;                /* some attempt of this batch was written
				      whole and never answered */
	bool waiting_gate;
	bool finished;             /* conn_done ran: handles closing */
	enum req_kind req;
	size_t batch;              /* index of the batch being pushed */
	unsigned attempts;         /* of the current request */
	struct buf head;           /* request line and headers */
	uint64_t t_send;
	uint64_t cursor;           /* pull */
	struct gen_rng jitter;
	/* the response being read */
	int status;
	enum codec_enc enc;
	unsigned retry_after_s;
	char hname[32];
	size_t hlen;
	int which;                 /* 1 content-encoding, 2 retry-after */
	struct buf hval;
	struct buf body;
	bool complete;
	bool bad;                  /* a header we cannot use */
};

static void next_action(struct lg_conn *c);
static void send_current(struct lg_conn *c);
static void conn_done(struct lg_conn *c);

static double self_cpu_s(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void conn_close(struct lg_conn *c);

/* Devices that have pushed keep their connection for the pulls, unless the
 * server has turned connections away: then they make room for the ones
 * still pushing. */
static void release_waiting(struct lg_net *net)
{
	for (unsigned i = 0; i < net->run->n_dev; i++) {
		struct lg_conn *o = net->run->dev[i].conn;
		if (o && o->phase == PH_PULL_WAIT)
			conn_close(o);
	}
}

static void count_error(struct lg_net *net, const char *kind)
{
	lg_count(&net->run->st.errors, kind, 1);
	if (!strcmp(kind, "http_503")) {
		net->refused = true;
		release_waiting(net);
	}
}

/* ---- response parsing ---- */

static int on_hfield(llhttp_t *p, const char *at, size_t n)
{
	struct lg_conn *c = p->data;
	size_t room = sizeof(c->hname) - 1 - c->hlen;
	size_t take = SH_MIN(n, room);
	memcpy(c->hname + c->hlen, at, take);
	c->hlen += take;
	return 0;
}

static int on_hfield_done(llhttp_t *p)
{
	struct lg_conn *c = p->data;
	c->hname[c->hlen] = 0;
	c->which = !strcasecmp(c->hname, "content-encoding") ? 1
		   : !strcasecmp(c->hname, "retry-after")    ? 2
							      : 0;
	c->hlen = 0;
	buf_reset(&c->hval);
	return 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t n)
{
	struct lg_conn *c = p->data;
	if (!c->which || c->hval.len + n > 256)
		return 0;
	return buf_append(&c->hval, at, n) < 0 ? -1 : 0;
}

static int on_hvalue_done(llhttp_t *p)
{
	struct lg_conn *c = p->data;
	const char *val = c->hval.data ? (const char *)c->hval.data : "";
	if (c->which == 1 && codec_enc_parse(val, c->hval.len, &c->enc) < 0)
		c->bad = true;
	if (c->which == 2 && c->hval.len > 0 && c->hval.len < 8) {
		char v[8];
		memcpy(v, c->hval.data, c->hval.len);
		v[c->hval.len] = 0;
		c->retry_after_s = (unsigned)strtoul(v, NULL, 10);
	}
	c->which = 0;
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct lg_conn *c = p->data;
	if (c->body.len + n > MAX_RESPONSE)
		return -1;
	return buf_append(&c->body, at, n) < 0 ? -1 : 0;
}

static int on_complete(llhttp_t *p)
{
	struct lg_conn *c = p->data;
	c->status = llhttp_get_status_code(p);
	c->complete = true;
	return HPE_PAUSED; /* one response per request: stop here */
}

/* ---- connection ---- */

static void on_tcp_closed(uv_handle_t *h)
{
	struct lg_conn *c = h->data;
	c->tcp_open = false;
	c->tcp_closing = false;
	c->connected = false;
	if (c->send_on_close) {
		c->send_on_close = false;
		send_current(c);
	}
}

static void conn_close(struct lg_conn *c)
{
	if (!c->tcp_open || c->tcp_closing)
		return;
	c->tcp_closing = true;
	c->connected = false;
	uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct lg_conn *c = h->data;
	(void)suggested;
	*b = uv_buf_init(c->net->rbuf, sizeof(c->net->rbuf));
}

static void attempt_failed(struct lg_conn *c, const char *kind);
static void handle_response(struct lg_conn *c);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct lg_conn *c = s->data;
	struct lg_stats *st = &c->net->run->st;
	if (c->tcp_closing)
		return;
	if (nread > 0) {
		if (c->req == REQ_PULL)
			st->pull_recv_bytes += (uint64_t)nread;
		else
			st->push_recv_bytes += (uint64_t)nread;
		if (!c->in_flight) {
			/* Bytes nobody asked for: a refusal at accept (503 when
			 * the server has too many connections), or garbage. */
			char kind[24] = "protocol";
			if (nread >= 12 && !memcmp(b->base, "HTTP/1.", 7))
				snprintf(kind, sizeof(kind), "http_%.3s", b->base + 9);
			count_error(c->net, kind);
			conn_close(c);
			return;
		}
		llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)nread);
		if (e == HPE_PAUSED && c->complete)
			handle_response(c);
		else if (e != HPE_OK)
			attempt_failed(c, "protocol");
		return;
	}
	if (nread == 0)
		return; /* EAGAIN */
	if (!c->in_flight) {
		conn_close(c); /* the server closed an idle keep-alive connection */
		return;
	}
	attempt_failed(c, nread == UV_EOF ? "closed" : "reset");
}

static void on_write(uv_write_t *w, int status)
{
	struct lg_conn *c = w->data;
	struct lg_stats *st = &c->net->run->st;
	if (status == UV_ECANCELED || c->tcp_closing)
		return; /* closed meanwhile: its failure is counted already */
	if (status < 0) {
		attempt_failed(c, "reset");
		return;
	}
	size_t n = c->head.len + (c->req == REQ_PUSH ? c->d->batches[c->batch].len : 0);
	if (c->req == REQ_PULL)
		st->pull_sent_bytes += n;
	else
		st->push_sent_bytes += n;
	c->written = true;
}

static void write_request(struct lg_conn *c)
{
	uv_buf_t b[2];
	unsigned nb = 1;
	b[0] = uv_buf_init((char *)c->head.data, (unsigned)c->head.len);
	if (c->req == REQ_PUSH) {
		const struct lg_batch *bt = &c->d->batches[c->batch];
		b[nb++] = uv_buf_init((char *)bt->body, (unsigned)bt->len);
	}
	c->write.data = c;
	c->t_send = sh_mono_ns();
	if (uv_write(&c->write, (uv_stream_t *)&c->tcp, b, nb, on_write) < 0)
		attempt_failed(c, "reset");
}

static void on_connect(uv_connect_t *req, int status)
{
	struct lg_conn *c = req->data;
	if (status == UV_ECANCELED || c->tcp_closing)
		return;
	if (status < 0) {
		if (c->in_flight) {
			attempt_failed(c, "connect");
		} else {
			count_error(c->net, "connect");
			conn_close(c);
		}
		return;
	}
	c->connected = true;
	uv_tcp_nodelay(&c->tcp, 1);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		if (c->in_flight)
			attempt_failed(c, "connect");
		else
			conn_close(c);
		return;
	}
	if (c->in_flight)
		write_request(c);
}

/* Opens the connection; the request in flight, if any, goes when it is up. */
static int conn_connect(struct lg_conn *c)
{
	int r = uv_tcp_init(&c->net->loop, &c->tcp);
	if (r < 0)
		return r;
	c->tcp.data = c;
	c->tcp_open = true;
	c->connect.data = c;
	r = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&c->net->run->addr,
			   on_connect);
	if (r < 0)
		conn_close(c);
	return r;
}

/* ---- requests ---- */

static void on_timeout(uv_timer_t *t)
{
	struct lg_conn *c = t->data;
	attempt_failed(c, "timeout");
}

/* After a backoff, or when a paced batch's slot comes. */
static void on_backoff(uv_timer_t *t)
{
	send_current(t->data);
}

static int build_head(struct lg_conn *c)
{
	struct lg_run *run = c->net->run;
	buf_reset(&c->head);
	if (c->req == REQ_PUSH)
		return buf_printf(&c->head,
				  "POST /v1/push HTTP/1.1\r\nHost: %s\r\n"
				  "Authorization: Bearer %s\r\n"
				  "Content-Type: application/x-protobuf\r\n"
				  "Content-Encoding: deflate\r\nAccept-Encoding: deflate\r\n"
				  "Content-Length: %zu\r\n\r\n",
				  run->host_hdr, c->d->token, c->d->batches[c->batch].len);
	return buf_printf(&c->head,
			  "GET /v1/pull?cursor=%" PRIu64 "&limit=%u HTTP/1.1\r\nHost: %s\r\n"
			  "Authorization: Bearer %s\r\nAccept-Encoding: deflate\r\n\r\n",
			  c->cursor, PULL_LIMIT, run->host_hdr, c->d->token);
}

/* Sends the current request (again), connecting first when needed. */
static void send_current(struct lg_conn *c)
{
	struct lg_net *net = c->net;
	if (c->phase == PH_DONE)
		return;
	if (c->tcp_closing) {
		c->send_on_close = true;
		return;
	}
	if (build_head(c) < 0) {
		attempt_failed(c, "nomem");
		return;
	}
	llhttp_init(&c->parser, HTTP_RESPONSE, &net->settings);
	c->parser.data = c;
	buf_reset(&c->body);
	c->status = 0;
	c->enc = CODEC_IDENTITY;
	c->retry_after_s = 0;
	c->hlen = 0;
	c->which = 0;
	c->complete = false;
	c->bad = false;
	c->written = false;
	c->in_flight = true;
	c->attempts++;
	if (c->req == REQ_PUSH) {
		net->run->st.attempts++;
		if (!net->push_started) {
			net->push_started = true;
			net->run->st.push_start_ns = sh_mono_ns();
			net->self_cpu0 = self_cpu_s();
			if (lg_steal_s(&net->steal0) < 0)
				net->steal0 = -1;
			if (net->run->o.server_pid > 0 &&
			    lg_proc_cpu_s(net->run->o.server_pid, &net->cpu0) < 0)
				net->cpu0 = -1;
			/* before the first push goes out: a blocking read of
			 * a few ms, on no one's clock but this batch's */
			struct lg_run *run = net->run;
			run->st.writer_known =
				run->o.metrics_token &&
				lg_writer_counters(run->o.server, run->o.metrics_token,
						   run->st.writer0) == 0;
		}
	} else {
		net->run->st.pull_requests++;
	}
	uv_timer_start(&c->timer, on_timeout, net->run->o.timeout_ms, 0);
	if (!c->tcp_open) {
		int r = conn_connect(c);
		if (r < 0)
			attempt_failed(c, "connect");
		return;
	}
	if (c->connected)
		write_request(c);
	/* else: connecting; on_connect writes it */
}

static void open_gate(struct lg_net *net)
{
	if (net->gate_open)
		return;
	net->gate_open = true;
	/* The shared records exist now: the others may edit them once a
	 * coordinator has assigned them (a failure shows as not_assigned) */
	lg_assign_shared(net->run);
	for (unsigned i = 0; i < net->run->n_dev; i++) {
		struct lg_conn *o = net->run->dev[i].conn;
		if (o->waiting_gate) {
			o->waiting_gate = false;
			next_action(o);
		}
	}
}

static void push_finished(struct lg_conn *c)
{
	struct lg_net *net = c->net;
	c->phase = PH_PULL_WAIT;
	c->req = REQ_NONE;
	if (net->refused)
		conn_close(c);
	if (c->d->idx == 0)
		open_gate(net);
	if (--net->pushing > 0)
		return;
	struct lg_stats *st = &net->run->st;
	st->push_end_ns = sh_mono_ns();
	if (!net->push_started)
		st->push_start_ns = st->push_end_ns;
	else
		st->self_cpu_s = self_cpu_s() - net->self_cpu0;
	double steal1;
	if (net->push_started && net->steal0 >= 0 && lg_steal_s(&steal1) == 0)
		st->steal_s = steal1 - net->steal0;
	if (net->run->o.server_pid > 0) {
		double cpu1;
		if (net->cpu0 >= 0 && lg_proc_cpu_s(net->run->o.server_pid, &cpu1) == 0)
			st->server_cpu_s = cpu1 - net->cpu0;
	}
	/* Every push is answered, so every commit holding one is over; the
	 * pulls, whose notes the writer commits too, have not begun. */
	if (st->writer_known)
		st->writer_known = lg_writer_counters(net->run->o.server, net->run->o.metrics_token,
						      st->writer1) == 0;
	/* Everyone has pushed: now the pulls, on the same connections. */
	st->pull_start_ns = sh_mono_ns();
	for (unsigned i = 0; i < net->run->n_dev; i++) {
		struct lg_conn *o = net->run->dev[i].conn;
		if (o->phase == PH_PULL_WAIT) {
			o->phase = PH_PULL;
			next_action(o);
		}
	}
}

/* Marks a batch that got no 200: in doubt when an attempt reached the
 * server unanswered, else refused (nothing stored). */
static void batch_given_up(struct lg_conn *c)
{
	const struct lg_batch *bt = &c->d->batches[c->batch];
	for (uint32_t i = 0; i < bt->n; i++)
		c->d->changes[bt->first + i].status = c->doubt ? LG_IN_DOUBT : LG_FAILED;
	c->net->run->st.batches_failed++;
	if (c->d->idx == 0 && c->batch == 0)
		open_gate(c->net);
	c->batch++;
	c->attempts = 0;
	c->doubt = false;
}

/* Decides and starts what the device does next. */
static void next_action(struct lg_conn *c)
{
	struct lg_net *net = c->net;
	switch (c->phase) {
	case PH_PUSH:
		if (c->d->idx != 0 && !net->gate_open) {
			c->waiting_gate = true;
			return;
		}
		if (c->batch >= c->d->n_batches || sh_mono_ns() >= net->deadline_ns) {
			push_finished(c);
			return;
		}
		c->req = REQ_PUSH;
		if (net->run->o.rate > 0) {
			/* Paced: batches take the next free slot of a global
			 * schedule at the offered rate, whoever is ready. */
			const struct lg_batch *bt = &c->d->batches[c->batch];
			uint64_t now = sh_mono_ns(), slot = SH_MAX(now, net->next_slot_ns);
			net->next_slot_ns = slot + (uint64_t)(bt->n * 1e9 / net->run->o.rate);
			if (slot >= net->deadline_ns) {
				push_finished(c);
				return;
			}
			if (slot > now + 100000) {
				uint64_t ms = (slot - now + 999999) / 1000000;
				uv_timer_start(&c->timer, on_backoff, ms, 0);
				return;
			}
		}
		send_current(c);
		return;
	case PH_PULL:
		c->req = REQ_PULL;
		send_current(c);
		return;
	case PH_PULL_WAIT:
		return;
	case PH_DONE:
		conn_done(c);
		return;
	}
}

static bool may_retry(struct lg_conn *c)
{
	const struct lg_opts *o = &c->net->run->o;
	/* Pulls come after the time bound; a few tries each keep them bounded. */
	if (c->req == REQ_PULL)
		return c->attempts <= SH_MIN(o->retries, 3u);
	return c->attempts <= o->retries && sh_mono_ns() < c->net->hard_deadline_ns;
}

static void retry_later(struct lg_conn *c)
{
	unsigned shift = SH_MIN(c->attempts > 0 ? c->attempts - 1 : 0, 10u);
	uint64_t ms = SH_MIN((uint64_t)BACKOFF_MIN_MS << shift, (uint64_t)BACKOFF_MAX_MS);
	ms += gen_below(&c->jitter, ms / 2 + 1);
	if (c->retry_after_s)
		ms = SH_MAX(ms, SH_MIN((uint64_t)c->retry_after_s * 1000, 10000ull));
	uv_timer_start(&c->timer, on_backoff, ms, 0);
}

/* Gives up the current request after its last attempt. */
static void request_given_up(struct lg_conn *c)
{
	if (c->req == REQ_PUSH) {
		batch_given_up(c);
	} else {
		c->phase = PH_DONE; /* its feed stays unread: pull_ok is false */
	}
	next_action(c);
}

/* The attempt failed without an answer: the connection is dropped. */
static void attempt_failed(struct lg_conn *c, const char *kind)
{
	count_error(c->net, kind);
	uv_timer_stop(&c->timer);
	c->in_flight = false;
	if (c->written && c->req == REQ_PUSH)
		c->doubt = true;
	conn_close(c);
	if (may_retry(c))
		retry_later(c);
	else
		request_given_up(c);
}

/* Returns true when the device goes on (false: a retry is scheduled or
 * the request was given up, which already decided what comes next). */
static bool push_answered(struct lg_conn *c, const uint8_t *p, size_t n)
{
	struct lg_run *run = c->net->run;
	struct lg_device *d = c->d;
	const struct lg_batch *bt = &d->batches[c->batch];
	Shahidi__V1__PushResponse *r = shahidi__v1__push_response__unpack(NULL, n, p);
	bool ok = r && r->n_results == bt->n && r->batch_seq == bt->seq;
	for (size_t i = 0; ok && i < r->n_results; i++)
		ok = r->results[i]->change_id == d->first_change_id + bt->first + i;
	if (!ok) {
		shahidi__v1__push_response__free_unpacked(r, NULL);
		c->doubt = true; /* it was answered, with something we cannot read */
		count_error(c->net, "bad_response");
		conn_close(c);
		if (may_retry(c))
			retry_later(c);
		else
			request_given_up(c);
		return false;
	}
	for (size_t i = 0; i < r->n_results; i++) {
		const Shahidi__V1__ChangeResult *x = r->results[i];
		struct lg_change *lc = &d->changes[bt->first + i];
		switch (x->status) {
		case SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED:
			lc->status = LG_APPLIED;
			break;
		case SHAHIDI__V1__CHANGE_RESULT__STATUS__DUPLICATE:
			lc->status = LG_DUPLICATE;
			break;
		default:
			lc->status = LG_REJECTED;
			lg_count(&run->st.rejections, x->code && *x->code ? x->code : "unknown", 1);
			break;
		}
	}
	shahidi__v1__push_response__free_unpacked(r, NULL);
	uint64_t us = (sh_mono_ns() - c->t_send) / 1000;
	uint64_t at = c->t_send > run->st.push_start_ns ? (c->t_send - run->st.push_start_ns) / 1000000 : 0;
	run->st.lat_at_ms[run->st.n_lat] = (uint32_t)SH_MIN(at, (uint64_t)UINT32_MAX);
	run->st.lat_us[run->st.n_lat++] = (uint32_t)SH_MIN(us, (uint64_t)UINT32_MAX);
	run->st.batches_acked++;
	if (d->idx == 0 && c->batch == 0)
		open_gate(c->net);
	c->batch++;
	c->attempts = 0;
	c->doubt = false;
	return true;
}

static bool pull_answered(struct lg_conn *c, const uint8_t *p, size_t n)
{
	Shahidi__V1__PullResponse *r = shahidi__v1__pull_response__unpack(NULL, n, p);
	if (!r) {
		count_error(c->net, "bad_response");
		if (may_retry(c))
			retry_later(c);
		else
			request_given_up(c);
		return false;
	}
	c->d->pulled += r->n_changes;
	c->net->run->st.pulled += r->n_changes;
	if (r->next_cursor)
		c->cursor = r->next_cursor;
	c->attempts = 0;
	if (!r->more) {
		c->d->pull_ok = true;
		c->phase = PH_DONE;
	}
	shahidi__v1__pull_response__free_unpacked(r, NULL);
	return true;
}

static void handle_response(struct lg_conn *c)
{
	struct lg_net *net = c->net;
	uv_timer_stop(&c->timer);
	c->in_flight = false;
	bool keep = llhttp_should_keep_alive(&c->parser) && !c->bad;
	if (!keep)
		conn_close(c); /* the next request reconnects */

	int st = c->status;
	if (st == 200) {
		struct buf plain = {0};
		const uint8_t *p = c->body.data;
		size_t n = c->body.len;
		if (c->enc != CODEC_IDENTITY) {
			if (codec_inflate(p, n, c->enc, MAX_RESPONSE, &plain) < 0) {
				buf_free(&plain);
				if (c->req == REQ_PUSH)
					c->doubt = true;
				attempt_failed(c, "bad_response");
				return;
			}
			p = plain.data;
			n = plain.len;
		}
		if (!p)
			p = (const uint8_t *)"";
		bool go_on = c->req == REQ_PUSH ? push_answered(c, p, n) : pull_answered(c, p, n);
		buf_free(&plain);
		if (go_on)
			next_action(c);
		return;
	}

	char kind[24];
	snprintf(kind, sizeof(kind), "http_%d", st);
	count_error(net, kind);
	/* The server stored nothing for these; other refusals are final. */
	bool transient = st >= 500 || st == 429 || st == 408;
	if (transient && may_retry(c)) {
		conn_close(c); /* a 5xx closes the connection anyway */
		retry_later(c);
		return;
	}
	request_given_up(c);
}

/* ---- the whole run ---- */

static void on_sample(uv_timer_t *t)
{
	struct lg_net *net = t->data;
	struct lg_stats *st = &net->run->st;
	uint64_t kb, anon;
	if (lg_proc_rss_kb(net->run->o.server_pid, &kb, &anon) == 0) {
		st->rss_known = true;
		st->rss_max_kb = SH_MAX(st->rss_max_kb, kb);
		st->rss_final_kb = kb;
		st->anon_max_kb = SH_MAX(st->anon_max_kb, anon);
		st->mapped_max_kb = SH_MAX(st->mapped_max_kb, kb - anon);
		st->anon_final_kb = anon;
	}
}

static void conn_done(struct lg_conn *c)
{
	struct lg_net *net = c->net;
	if (c->finished)
		return;
	c->finished = true;
	c->phase = PH_DONE;
	c->req = REQ_NONE;
	c->send_on_close = false;
	conn_close(c);
	uv_close((uv_handle_t *)&c->timer, NULL);
	if (--net->active > 0)
		return;
	net->run->st.pull_end_ns = sh_mono_ns();
	if (net->sampler_on) {
		on_sample(&net->sampler);
		uv_close((uv_handle_t *)&net->sampler, NULL);
		net->sampler_on = false;
	}
	if (net->sigint_on) {
		uv_close((uv_handle_t *)&net->sigint, NULL);
		net->sigint_on = false;
	}
}

static void on_sigint(uv_signal_t *s, int signum)
{
	struct lg_net *net = s->data;
	(void)signum;
	fprintf(stderr, "shahidi-loadgen: interrupted: finishing the batches in flight "
			"(again to quit now)\n");
	uint64_t now = sh_mono_ns();
	net->deadline_ns = now;
	net->hard_deadline_ns = SH_MIN(net->hard_deadline_ns, now);
	uv_signal_stop(s); /* a second ^C kills */
	uv_close((uv_handle_t *)s, NULL);
	net->sigint_on = false;
}

int lg_net_run(struct lg_run *run)
{
	struct lg_net *net = calloc(1, sizeof(*net));
	struct lg_conn *conns = calloc(run->n_dev, sizeof(*conns));
	int r = -ENOMEM;
	if (!net || !conns)
		goto out;
	if (!(run->st.lat_us = calloc(run->total_batches + 1, sizeof(*run->st.lat_us))) ||
	    !(run->st.lat_at_ms = calloc(run->total_batches + 1, sizeof(*run->st.lat_at_ms))))
		goto out;
	if ((r = uv_loop_init(&net->loop)) < 0)
		goto out;
	net->run = run;
	llhttp_settings_init(&net->settings);
	net->settings.on_header_field = on_hfield;
	net->settings.on_header_field_complete = on_hfield_done;
	net->settings.on_header_value = on_hvalue;
	net->settings.on_header_value_complete = on_hvalue_done;
	net->settings.on_body = on_body;
	net->settings.on_message_complete = on_complete;
	uint64_t now = sh_mono_ns();
	net->deadline_ns = now + (uint64_t)(run->o.seconds * 1e9);
	/* Retries stop at the time bound plus two timeouts: a run ends. */
	net->hard_deadline_ns = net->deadline_ns + 2ull * run->o.timeout_ms * 1000000ull;
	net->pushing = net->active = run->n_dev;
	run->st.server_cpu_s = -1;
	run->st.steal_s = -1;

	if (run->o.server_pid > 0) {
		uv_timer_init(&net->loop, &net->sampler);
		net->sampler.data = net;
		net->sampler_on = true;
		uv_timer_start(&net->sampler, on_sample, 0, SAMPLE_MS);
	}
	if (uv_signal_init(&net->loop, &net->sigint) == 0) {
		net->sigint.data = net;
		net->sigint_on = uv_signal_start(&net->sigint, on_sigint, SIGINT) == 0;
		if (!net->sigint_on)
			uv_close((uv_handle_t *)&net->sigint, NULL);
	}

	for (unsigned i = 0; i < run->n_dev; i++) {
		struct lg_conn *c = &conns[i];
		c->d = &run->dev[i];
		c->d->conn = c;
		c->net = net;
		c->phase = PH_PUSH;
		c->jitter.s = run->o.seed * 31 + i;
		uv_timer_init(&net->loop, &c->timer);
		c->timer.data = c;
		/* Connect everyone up front: the push clock measures pushes. */
		if (conn_connect(c) < 0)
			count_error(net, "connect");
	}
	for (unsigned i = 0; i < run->n_dev; i++)
		next_action(&conns[i]);

	r = uv_run(&net->loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&net->loop);
	if (r != 0) {
		fprintf(stderr, "shahidi-loadgen: the event loop still held handles at the end\n");
		r = -EBUSY;
	}
out:
	for (unsigned i = 0; conns && i < run->n_dev; i++) {
		buf_free(&conns[i].head);
		buf_free(&conns[i].hval);
		buf_free(&conns[i].body);
		run->dev[i].conn = NULL;
	}
	free(conns);
	free(net);
	return r;
}
