/* http_respond.c: answers, whole or streamed, and the request log. */
#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "http_int.h"
#include "render.h"
#include "server.h"

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

/* ---- responses ---- */

static void on_written(uv_write_t *w, int status)
{
	struct write_req *wr = (struct write_req *)w;
	struct http_conn *c = wr->c;
	if (status < 0 && !c->closing)
		http__conn_close(c); /* the client went away mid-write */
	if (wr->drained)
		wr->drained(wr->ud); /* on every status: the producer frees its state */
	buf_free(&wr->data);
	free(wr);
	if (!c->closing && c->close_after && !c->streaming &&
	    uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
		http__conn_close(c);
	else if (!c->closing && !c->streaming)
		http__process(c); /* the write queue drained: parse what waits */
	http_conn_unref(c);
}

void http__log_request(struct http_conn *c, int status, size_t out)
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
	/* A whole response is logged as it is handed to uv_write, a streamed
	 * one as its last chunk is: the time spans the request's first byte
	 * read to the last byte of its answer handed to the socket. */
	uint64_t ns = sh_mono_ns() - c->t0;
	unsigned b = 0;
	while (b < SERVER_LATENCY_BOUNDS && ns > (uint64_t)server_latency_us[b] * 1000)
		b++;
	srv->stats.latency[r->route_id & 31][b]++;
	srv->stats.latency_sum_ns[r->route_id & 31] += ns;
	if (srv->cfg.quiet)
		return;
	char when[32], dev[17] = "-";
	render_time_ms(sh_now_ms(), when);
	if (r->device)
		sh_device_fmt(r->device, dev);
	double ms = (double)ns / 1e6;
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

bool http_compress(enum codec_enc enc, int level, const uint8_t *body, size_t len,
		   struct buf *out)
{
	if ((enc == CODEC_DEFLATE || enc == CODEC_GZIP) && len > 64 &&
	    codec_deflate(body, len, enc, level, out) == 0 && out->len < len)
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
	http__body_abort(c); /* answered before its streamed body was all read */
	http__release_inflight(c);
	http__resume_paused(srv);
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
		http__conn_close(c);
		return;
	}
	wr->c = c;
	const char *enc = NULL;
	struct buf packed = {0};
	if (body_enc == CODEC_AUTO) {
		body_enc = CODEC_IDENTITY;
		enum codec_enc e = http_accepted_encoding(c);
		/* Level 1 on the event loop: a push's answer (100 results,
		 * 614 bytes) came to the same 193 bytes at levels 1 and 6, in
		 * 6.3 us against 19.7 (libdeflate), which every other phone's
		 * request waited through. Large bodies are compressed on the
		 * pool (pulls, at 6). */
		if (content_type && !strcmp(content_type, "application/x-protobuf") &&
		    http_compress(e, 1, body, len, &packed)) {
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
	http__log_request(c, status, len);
	if (r < 0) {
		buf_free(&wr->data);
		free(wr);
		http__conn_close(c);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)wr->data.data, (unsigned)wr->data.len);
	http_conn_ref(c);
	if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
		buf_free(&wr->data);
		free(wr);
		http_conn_unref(c);
		http__conn_close(c);
		return;
	}
	c->extra_len = 0;
	if (c->close_after) {
		/* Nothing more is read; the write callback closes. */
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
		http__arm(c, srv->cfg.write_timeout_ms);
		return;
	}
	c->state = CS_IDLE;
	http__start_idle(c);
	/* Between requests a connection holds no buffers: a thousand phones
	 * idling on keep-alive must cost next to nothing. */
	buf_free(&c->body);
	if (!c->pending.len)
		buf_free(&c->pending);
	if (!c->in_parser)
		http__process(c);
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
	http__release_inflight(c);
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

int http_stream_start_length(struct http_conn *c, int status, const char *content_type,
			     uint64_t length)
{
	struct buf h = {0};
	if (c->closing)
		return -EPIPE;
	c->responded = true;
	c->streaming = true;
	c->stream_raw = true;
	c->stream_out = 0;
	c->log_status = status;
	http__release_inflight(c);
	int r = buf_printf(&h,
			   "HTTP/1.1 %d %s\r\nContent-Length: %" PRIu64 "\r\nContent-Type: %s\r\n"
			   "Connection: close\r\nCache-Control: no-store\r\n"
			   "X-Content-Type-Options: nosniff\r\n%.*s\r\n",
			   status, status_text(status), length, content_type, (int)c->extra_len,
			   c->extra);
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
	int r = c->stream_raw ? 0 : buf_printf(&b, "%zx\r\n", n);
	if (r == 0)
		r = buf_append(&b, p, n);
	if (r == 0 && !c->stream_raw)
		r = buf_append(&b, "\r\n", 2);
	if (r == 0)
		r = queue_write(c, &b, drained, ud);
	if (r == 0) {
		c->stream_out += n;
		http__arm(c, c->srv->cfg.write_timeout_ms); /* a reader that stalls is dropped */
	}
	buf_free(&b);
	return r;
}

void http_stream_end(struct http_conn *c)
{
	struct buf b = {0};
	if (!c->streaming)
		return;
	http__log_request(c, c->stream_raw ? c->log_status : 200, c->stream_out);
	c->streaming = false;
	if (c->closing)
		return;
	if (c->req.method == HTTP_HEAD || c->stream_raw) {
		c->stream_raw = false;
		/* nothing to end with: on_written closes once the rest has left */
		if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
			http__conn_close(c);
		return;
	}
	if (buf_puts(&b, "0\r\n\r\n") == 0 && queue_write(c, &b, NULL, NULL) == 0) {
		buf_free(&b);
		return; /* on_written closes (close_after) */
	}
	buf_free(&b);
	http__conn_close(c);
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
