/* http_parse.c: llhttp's callbacks, what they keep of a request, and
 * the loop that feeds the parser one request at a time. */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admit.h"
#include "common.h"
#include "http_int.h"
#include "peer.h"
#include "server.h"

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
	c->body_streamed = false;
	c->sink_status = 0;
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
		http__arm(c, c->srv->cfg.header_timeout_ms);
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
		else if (!strcasecmp(c->hname, "upload-length"))
			c->hcur = H_UPLOAD_LENGTH;
		else if (!strcasecmp(c->hname, "upload-offset"))
			c->hcur = H_UPLOAD_OFFSET;
		else if (!strcasecmp(c->hname, "upload-checksum"))
			c->hcur = H_UPLOAD_CHECKSUM;
		else if (!strcasecmp(c->hname, "upload-metadata"))
			c->hcur = H_UPLOAD_METADATA;
		else if (!strcasecmp(c->hname, "content-type"))
			c->hcur = H_CONTENT_TYPE;
		else if (!strcasecmp(c->hname, "range"))
			c->hcur = H_RANGE;
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
		/* peer.h: believed only from a trusted proxy on this machine */
		peer_forwarded_for(c->srv->cfg.trust_proxy, c->peer_loopback, v, n, c->req.peer);
		break;
	case H_UPLOAD_LENGTH:
		snprintf(c->req.tus.length, sizeof(c->req.tus.length), "%.*s", (int)n, v);
		break;
	case H_UPLOAD_OFFSET:
		snprintf(c->req.tus.offset, sizeof(c->req.tus.offset), "%.*s", (int)n, v);
		break;
	case H_UPLOAD_CHECKSUM:
		snprintf(c->req.tus.checksum, sizeof(c->req.tus.checksum), "%.*s", (int)n, v);
		break;
	case H_UPLOAD_METADATA:
		snprintf(c->req.tus.metadata, sizeof(c->req.tus.metadata), "%.*s", (int)n, v);
		break;
	case H_CONTENT_TYPE:
		snprintf(c->req.tus.content_type, sizeof(c->req.tus.content_type), "%.*s", (int)n, v);
		break;
	case H_RANGE:
		snprintf(c->req.tus.range, sizeof(c->req.tus.range), "%.*s", (int)n, v);
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

	c->srv->http->handlers->on_headers(c, &c->req);
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
	if (c->req.content_length && !c->req.body_sink &&
	    buf_reserve(&c->body, (size_t)SH_MIN(c->req.content_length, (uint64_t)READ_CHUNK)) < 0)
		return HPE_USER;
	if (has_body) {
		c->state = CS_BODY;
		c->body_t0 = c->body_last = sh_mono_ns();
		c->body_streamed = c->req.body_sink != NULL;
		http__arm(c, c->body_streamed ? srv->cfg.body_stall_ms
					      : SH_MIN(srv->cfg.body_timeout_ms, srv->cfg.body_stall_ms));
		if (c->expect_continue) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
			uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		}
	}
	return 0;
}

/* A streamed body: each piece goes to the route as it arrives, charged
 * to admission only while it is being written. */
static int on_body_sink(struct http_conn *c, const char *at, size_t n)
{
	struct http_server *h = c->srv->http;
	struct admit *adm = h->admit;
	c->body_last = sh_mono_ns();
	h->upload_read += n;
	if (h->upload_read > c->srv->stats.upload_read_iter_max)
		c->srv->stats.upload_read_iter_max = h->upload_read;
	if (!c->req.body_sink)
		return 0; /* aborted: the rest is read and dropped */
	if (!admit_charge(adm, c->req.device, n)) {
		c->error_status = 429;
		return HPE_USER;
	}
	int r = c->req.body_sink(c->req.body_ud, (const uint8_t *)at, n);
	admit_release(adm, c->req.device, n);
	if (r < 0) {
		/* Answered once the body is in (it is bounded by its length):
		 * a client still sending would miss an answer sent before. */
		c->sink_status = r == -ENOSPC ? 507 : 500;
		c->req.body_sink = NULL;
	}
	return 0;
}

void http__body_abort(struct http_conn *c)
{
	void (*abort_fn)(void *) = c->req.body_abort;
	void *ud = c->req.body_ud;
	c->req.body_sink = NULL;
	c->req.body_abort = NULL;
	c->req.body_ud = NULL;
	if (abort_fn)
		abort_fn(ud);
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct http_conn *c = conn_of(p);
	if (c->body_streamed)
		return on_body_sink(c, at, n);
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
	if (c->sink_status) {
		if (c->sink_status == 507)
			http_error(c, 507, "storage_full",
				   "the server's disk is full; nothing of this request was kept, "
				   "try again later");
		else
			http_error(c, 500, "internal", "the request body could not be stored");
		return HPE_PAUSED;
	}
	c->req.body = c->body.data;
	c->req.body_len = c->body.len;
	c->req.body_sink = NULL; /* the route has it all now */
	c->req.body_abort = NULL;
	c->srv->http->handlers->on_request(c, &c->req);
	/* One request at a time: the next pipelined one waits. */
	return HPE_PAUSED;
}

static void parse_error(struct http_conn *c, llhttp_errno_t err)
{
	c->close_after = true;
	if (c->responded)
		return;
	if (c->error_status == 9) {
		http__conn_close(c); /* HTTP/0.9 could not read an HTTP/1.1 answer */
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
	} else if (err == HPE_USER)
		http_error(c, 500, "internal", "out of memory");
	else
		http_error(c, 400, "bad_request", llhttp_errno_name(err));
}

/* Gives data to the parser; returns the bytes it took (up to the end of
 * a request, where it pauses), or -1 on a parse error, *err saying which
 * (the caller drops what is pending, then answers it: parse_error). */
static ssize_t parse_some(struct http_conn *c, const char *data, size_t len,
			  llhttp_errno_t *ret_err)
{
	/* A value cut by the end of the last read goes on at the start of
	 * this one; one whose line ended there may not go on at all. */
	if (c->hval_open)
		c->hval_next = c->hval_next == c->exec_end ? data : NULL;
	c->exec_end = data + len;
	c->in_parser = true;
	llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
	c->in_parser = false;
	size_t used = len;
	if (err == HPE_PAUSED) {
		used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
		llhttp_resume(&c->parser);
	} else if (err != HPE_OK) {
		c->bytes_in += len;
		if (c->log_deferred) {
			c->log_deferred = false;
			http__log_request(c, c->log_status, c->log_out);
		}
		*ret_err = err;
		return -1;
	}
	c->bytes_in += used;
	if (c->log_deferred) {
		c->log_deferred = false;
		http__log_request(c, c->log_status, c->log_out);
	}
	return (ssize_t)used;
}

static bool may_parse(struct http_conn *c)
{
	return !c->closing && !c->close_after && c->state != CS_BUSY &&
	       uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_QUEUE_CAP;
}

/* Parses what is pending, one request at a time. */
void http__process(struct http_conn *c)
{
	while (c->pending.len && may_parse(c)) {
		/* A new request waits, unparsed, while the server is overloaded:
		 * a thousand phones connecting at once each have a request in
		 * the first read, and starting them all would hold a thousand
		 * decoded batches. */
		if (c->state == CS_IDLE && http__overloaded(c->srv) &&
		    (http__others_overloaded(c->srv) || http__next_is_push(c) != 0)) {
			http__pause_by_server(c);
			break;
		}
		if (c->state == CS_IDLE)
			c->bytes_in = 0; /* a new request starts with these bytes */
		llhttp_errno_t err = HPE_OK;
		ssize_t used = parse_some(c, (const char *)c->pending.data, c->pending.len, &err);
		if (used < 0) {
			c->pending.len = 0;
			parse_error(c, err);
			break;
		}
		memmove(c->pending.data, c->pending.data + used, c->pending.len - (size_t)used);
		c->pending.len -= (size_t)used;
	}
	/* Reads land in the shared buffer first: what was parsed need not
	 * stay allocated while the request is decoded and committed. */
	if (!c->pending.len)
		buf_free(&c->pending);
	http__update_reading(c);
}

void http__process_read(struct http_conn *c, const char *data, size_t len)
{
	/* An upload's body goes to its sink straight from the read buffer:
	 * copied to pending first, each of its bytes cost one more copy (a
	 * tenth of the server's CPU while uploads stream in). What is left
	 * when its request ends is kept, as any read. */
	if (!c->pending.len && c->state == CS_BODY && c->body_streamed && may_parse(c)) {
		llhttp_errno_t err = HPE_OK;
		ssize_t used = parse_some(c, data, len, &err);
		if (used < 0) {
			parse_error(c, err);
			http__update_reading(c);
			return;
		}
		data += used;
		len -= (size_t)used;
	}
	if (len && buf_append(&c->pending, data, len) < 0) {
		http__conn_close(c);
		return;
	}
	http__process(c);
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

void http__parser_settings(llhttp_settings_t *s)
{
	llhttp_settings_init(s);
	s->on_message_begin = on_message_begin;
	s->on_url = on_url;
	s->on_version_complete = on_version_complete;
	s->on_header_field = on_header_field;
	s->on_header_field_complete = on_header_field_complete;
	s->on_header_value = on_header_value;
	s->on_header_value_complete = on_header_value_complete;
	s->on_headers_complete = on_headers_complete;
	s->on_body = on_body;
	s->on_message_complete = on_message_complete;
}
