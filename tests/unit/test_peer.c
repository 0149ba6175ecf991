/* The network policy (server/peer.c): which peers are this machine, whose
 * X-Forwarded-For is believed and what it yields, and where plain HTTP
 * may be served. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "check.h"
#include "peer.h"

static bool loop4(const char *ip, uint8_t out[16])
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	CHECK(inet_pton(AF_INET, ip, &a.sin_addr) == 1);
	return peer_address((struct sockaddr *)&a, out);
}

static bool loop6(const char *ip, uint8_t out[16])
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6};
	CHECK(inet_pton(AF_INET6, ip, &a.sin6_addr) == 1);
	return peer_address((struct sockaddr *)&a, out);
}

static void test_loopback(void)
{
	uint8_t a[16], b[16];
	CHECK(loop4("127.0.0.1", a) && loop4("127.9.8.7", a));
	CHECK(!loop4("10.0.0.1", a) && !loop4("128.0.0.1", a));
	CHECK(loop6("::1", a) && loop6("::ffff:127.0.0.2", a));
	CHECK(!loop6("::2", a) && !loop6("fe80::1", a) && !loop6("::ffff:10.0.0.1", a));
	/* IPv4 is kept mapped: one key for a rate limit, either way it came */
	loop4("192.0.2.7", a);
	loop6("::ffff:192.0.2.7", b);
	CHECK(!memcmp(a, b, 16));
}

static void test_forwarded_for(void)
{
	uint8_t out[16], want[16], before[16];
	const char *v = "203.0.113.9, 198.51.100.4";
	loop4("198.51.100.4", want);
	CHECK_EQ_INT(peer_forwarded_for(true, true, v, strlen(v), out), 0);
	CHECK(!memcmp(out, want, 16)); /* the last hop: what our proxy saw */
	memset(out, 0xaa, 16);
	memcpy(before, out, 16);
	CHECK_EQ_INT(peer_forwarded_for(false, true, v, strlen(v), out), -EPERM);
	CHECK_EQ_INT(peer_forwarded_for(true, false, v, strlen(v), out), -EPERM);
	CHECK(!memcmp(out, before, 16));
	const char *bad[] = {"", "not-an-address", "1.2.3.4, ", "1.2.3.4.5", "::zz"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ_INT(peer_forwarded_for(true, true, bad[i], strlen(bad[i]), out), -EINVAL);
		CHECK(!memcmp(out, before, 16));
	}
	char big[300];
	memset(big, '1', sizeof(big));
	CHECK_EQ_INT(peer_forwarded_for(true, true, big, sizeof(big), out), -EINVAL);
	const char *v6 = " 2001:db8::5";
	CHECK_EQ_INT(peer_forwarded_for(true, true, v6, strlen(v6), out), 0);
	loop6("2001:db8::5", want);
	CHECK(!memcmp(out, want, 16));
}

static void test_listen(void)
{
	struct sockaddr_storage ss;
	char err[512];
	const char *ok[] = {"127.0.0.1:8080", "localhost:0", "[::1]:9000", "127.1.2.3:65535"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		CHECK_EQ_INT(peer_listen_addr(ok[i], false, &ss, err, sizeof(err)), 0);
	const char *malformed[] = {"8080", ":8080", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000",
				   "[::1:80", "host.example:80", "[]:80"};
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		CHECK_EQ_INT(peer_listen_addr(malformed[i], true, &ss, err, sizeof(err)), -EINVAL);
		CHECK(strstr(err, "expected HOST:PORT"));
	}
	const char *beyond[] = {"0.0.0.0:8080", "192.0.2.1:80", "[::]:8080", "[2001:db8::1]:80"};
	for (size_t i = 0; i < sizeof(beyond) / sizeof(beyond[0]); i++) {
		CHECK_EQ_INT(peer_listen_addr(beyond[i], false, &ss, err, sizeof(err)), -EPERM);
		CHECK(strstr(err, "plain HTTP") && strstr(err, "--allow-plaintext"));
		CHECK_EQ_INT(peer_listen_addr(beyond[i], true, &ss, err, sizeof(err)), 0);
	}
}

int main(void)
{
	RUN(test_loopback);
	RUN(test_forwarded_for);
	RUN(test_listen);
	return 0;
}
