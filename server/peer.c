#include "peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static bool is_loopback(const uint8_t a[16])
{
	static const uint8_t lo6[16] = {[15] = 1};
	static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
	return !memcmp(a, lo6, 16) || (!memcmp(a, mapped, 12) && a[12] == 127);
}

static void map_v4(const void *in_addr, uint8_t out[16])
{
	memset(out, 0, 10);
	memset(out + 10, 0xff, 2);
	memcpy(out + 12, in_addr, 4);
}

bool peer_address(const struct sockaddr *sa, uint8_t out[16])
{
	if (sa->sa_family == AF_INET6)
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	else if (sa->sa_family == AF_INET)
		map_v4(&((const struct sockaddr_in *)sa)->sin_addr, out);
	else
		memset(out, 0, 16);
	return is_loopback(out);
}

int peer_forwarded_for(bool trust_proxy, bool from_loopback, const char *v, size_t n,
		       uint8_t out[16])
{
	if (!trust_proxy || !from_loopback)
		return -EPERM;
	if (!n || n >= 256)
		return -EINVAL;
	char ip[256];
	const char *last = memrchr(v, ',', n);
	last = last ? last + 1 : v;
	snprintf(ip, sizeof(ip), "%.*s", (int)(n - (size_t)(last - v)), last);
	char *p = ip;
	while (*p == ' ')
		p++;
	struct in6_addr a6;
	struct in_addr a4;
	if (inet_pton(AF_INET6, p, &a6) == 1)
		memcpy(out, &a6, 16);
	else if (inet_pton(AF_INET, p, &a4) == 1)
		map_v4(&a4, out);
	else
		return -EINVAL;
	return 0;
}

int peer_listen_addr(const char *s, bool allow_plaintext, struct sockaddr_storage *ret,
		     char *err, size_t errlen)
{
	char host[256];
	uint8_t a[16];
	const char *colon = strrchr(s, ':');
	char *end;
	long port = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || colon == s || !colon[1] || *end || port < 0 || port > 65535 ||
	    (size_t)(colon - s) >= sizeof(host))
		goto malformed;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (n < 3 || host[n - 1] != ']')
			goto malformed;
		memmove(host, host + 1, n - 2);
		host[n - 2] = 0;
		if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ret) < 0)
			goto malformed;
	} else {
		if (!strcmp(host, "localhost"))
			strcpy(host, "127.0.0.1");
		if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ret) < 0)
			goto malformed;
	}
	if (!peer_address((const struct sockaddr *)ret, a) && !allow_plaintext) {
		snprintf(err, errlen,
			 "refusing to serve plain HTTP on %s, beyond this machine.\n"
			 "Put TLS in front (see tools/nginx-shahidi.conf) and listen on loopback,\n"
			 "or pass --allow-plaintext if the network is otherwise protected.",
			 s);
		return -EPERM;
	}
	return 0;
malformed:
	snprintf(err, errlen, "--listen %s: expected HOST:PORT or [V6]:PORT", s);
	return -EINVAL;
}
