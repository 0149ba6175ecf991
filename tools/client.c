#include "client.h"

#include <errno.h>
#include <llhttp.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec.h"
#include "common.h"

struct parse {
	struct client_response *r;
	struct buf raw;       /* body as received */
	char hname[32];
	size_t hlen;
	int which;            /* 1 content-type, 2 content-encoding, 3 retry-after */
	struct buf hval;
	enum codec_enc enc;
	int done;
};

static int on_hfield(llhttp_t *p, const char *at, size_t n)
{
	struct parse *s = p->data;
	size_t room = sizeof(s->hname) - 1 - s->hlen;
	size_t take = n < room ? n : room;
	memcpy(s->hname + s->hlen, at, take);
	s->hlen += take;
	return 0;
}

static int on_hfield_done(llhttp_t *p)
{
	struct parse *s = p->data;
	s->hname[s->hlen] = 0;
	s->which = !strcasecmp(s->hname, "content-type")       ? 1
		   : !strcasecmp(s->hname, "content-encoding") ? 2
		   : !strcasecmp(s->hname, "retry-after")      ? 3
							       : 0;
	s->hlen = 0;
	buf_reset(&s->hval);
	return 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t n)
{
	struct parse *s = p->data;
	return s->which && buf_append(&s->hval, at, n) < 0 ? -1 : 0;
}

static int on_hvalue_done(llhttp_t *p)
{
	struct parse *s = p->data;
	char v[64];
	size_t n = SH_MIN(s->hval.len, sizeof(v) - 1);
	if (n) /* a header not kept (or empty) leaves hval without storage */
		memcpy(v, s->hval.data, n);
	v[n] = 0;
	if (s->which == 1)
		snprintf(s->r->content_type, sizeof(s->r->content_type), "%s", v);
	else if (s->which == 2 && codec_enc_parse(v, n, &s->enc) < 0)
		return -1;
	else if (s->which == 3)
		snprintf(s->r->retry_after, sizeof(s->r->retry_after), "%s", v);
	s->which = 0;
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct parse *s = p->data;
	if (s->raw.len + n > (size_t)256 << 20)
		return -1;
	return buf_append(&s->raw, at, n) < 0 ? -1 : 0;
}

static int on_done(llhttp_t *p)
{
	struct parse *s = p->data;
	s->r->status = llhttp_get_status_code(p);
	s->done = 1;
	return HPE_PAUSED;
}

static int dial(const char *url, unsigned timeout_ms, char *host_hdr, size_t hlen)
{
	char host[256], port[16] = "80";
	if (strncmp(url, "http://", 7))
		return -EPROTONOSUPPORT;
	const char *h = url + 7, *end = h + strcspn(h, "/");
	const char *colon = NULL;
	if (*h == '[') {
		const char *rb = memchr(h, ']', (size_t)(end - h));
		if (!rb)
			return -EINVAL;
		if (rb + 1 < end && rb[1] == ':')
			colon = rb + 1;
		snprintf(host, sizeof(host), "%.*s", (int)(rb - h - 1), h + 1);
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		snprintf(host, sizeof(host), "%.*s", (int)((colon ? colon : end) - h), h);
	}
	if (colon)
		snprintf(port, sizeof(port), "%.*s", (int)(end - colon - 1), colon + 1);
	snprintf(host_hdr, hlen, "%.*s", (int)(end - h), h);

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai, *a;
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -EHOSTUNREACH;
	int fd = -ECONNREFUSED;
	for (a = ai; a; a = a->ai_next) {
		int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (s < 0)
			continue;
		struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(s, a->ai_addr, a->ai_addrlen) == 0) {
			fd = s;
			break;
		}
		fd = -errno;
		close(s);
	}
	freeaddrinfo(ai);
	return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

int client_request(const char *url, const char *method, const char *path, const char *headers,
		   const uint8_t *body, size_t len, unsigned timeout_ms,
		   struct client_response *ret)
{
	char host[300];
	int fd = dial(url, timeout_ms, host, sizeof(host));
	if (fd < 0)
		return fd;
	struct buf req = {0};
	struct client_response r = {0};
	struct parse s = {.r = &r};
	int rc = buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n"
				  "Accept-Encoding: gzip, deflate\r\nConnection: close\r\n%s\r\n",
			    method, path, host, len, headers ? headers : "");
	if (rc == 0)
		rc = send_all(fd, req.data, req.len);
	if (rc == 0 && len)
		rc = send_all(fd, body, len);
	buf_free(&req);

	llhttp_settings_t st;
	llhttp_t p;
	llhttp_settings_init(&st);
	st.on_header_field = on_hfield;
	st.on_header_field_complete = on_hfield_done;
	st.on_header_value = on_hvalue;
	st.on_header_value_complete = on_hvalue_done;
	st.on_body = on_body;
	st.on_message_complete = on_done;
	llhttp_init(&p, HTTP_RESPONSE, &st);
	p.data = &s;
	char chunk[65536];
	while (rc == 0 && !s.done) {
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
			break;
		}
		llhttp_errno_t e = n == 0 ? llhttp_finish(&p) : llhttp_execute(&p, chunk, (size_t)n);
		if (e != HPE_OK && e != HPE_PAUSED)
			rc = -EPROTO;
		else if (n == 0 && !s.done)
			rc = -ECONNRESET; /* closed before a whole response */
	}
	close(fd);
	if (rc == 0 && s.enc != CODEC_IDENTITY)
		rc = codec_inflate(s.raw.data, s.raw.len, s.enc, (size_t)256 << 20, &r.body);
	else if (rc == 0)
		rc = buf_append(&r.body, s.raw.data, s.raw.len);
	buf_free(&s.raw);
	buf_free(&s.hval);
	if (rc < 0) {
		buf_free(&r.body);
		return rc;
	}
	*ret = r;
	return 0;
}

void client_response_free(struct client_response *r)
{
	buf_free(&r->body);
}
