/* Fuzz target: a request stream as the server's connection code sees it.
 * The real HTTP layer (llhttp, limits, routing, token checks, push
 * decoding, the writer) runs in this process on a loopback port; each
 * input is written to a fresh connection, which is then half-closed, and
 * the loop runs until the server has answered and closed. A crash, an
 * over-read (ASan) or a hang (the deadline) is a finding. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "common.h"
#include "http.h"
#include "server.h"

/* The token the seed requests carry (tests/fuzz/make_seeds.sh). */
static const char fuzz_token[] = "shd_fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuz";
#define FUZZ_DEVICE 1

static struct server srv;
static int port;

static void setup(void)
{
	char err[512], dir[] = "/tmp/shahidi-fuzz-http-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	struct server_config *cfg = &srv.cfg;
	server_config_default(cfg);
	cfg->data_dir = dir;
	cfg->listen = "127.0.0.1:0";
	cfg->max_body = 1 << 20;
	cfg->max_header = 8192;
	cfg->header_timeout_ms = cfg->body_timeout_ms = cfg->body_stall_ms = 2000;
	cfg->idle_timeout_ms = cfg->write_timeout_ms = 2000;
	cfg->max_conns = 64;
	cfg->max_inflight = 8 << 20;
	cfg->max_queue = 64;
	cfg->pull_limit = 100;
	cfg->quiet = true;
	cfg->auth_burst = 1000000;
	cfg->auth_refill_ms = 1;
	cfg->sync.max_inflated = 1 << 20;
	cfg->unsafe_nosync = true;
	if (server_init(&srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_http: %s\n", err);
		abort();
	}
	struct store_txn *t;
	uint8_t hash[32];
	store_begin(srv.store, true, &t);
	store_device_t d = SHAHIDI__STORE__V1__DEVICE__INIT;
	d.id = FUZZ_DEVICE;
	d.name = "fuzz";
	d.county = "047";
	d.role = ROLE_DEVICE;
	auth_token_hash(fuzz_token, strlen(fuzz_token), hash);
	d.token_hash.data = hash;
	d.token_hash.len = 32;
	store_device_put(t, &d);
	store_token_put(t, hash, FUZZ_DEVICE);
	store_commit(t);
	if (server_start(&srv, err, sizeof(err)) < 0)
		abort();
	port = http_port(&srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!srv.loop)
		setup();
	if (size > 32768)
		return 0; /* the socket buffer takes it in one write */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int big = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	/* Close with a reset, not FIN: TIME_WAIT would use up the ephemeral
	 * ports within seconds at this rate. */
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	/* libFuzzer's timer (SIGALRM) may interrupt a blocking connect: connect
	 * without blocking and wait for it. */
	fcntl(fd, F_SETFL, O_NONBLOCK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		perror("fuzz_http: connect");
		abort();
	}
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t el = sizeof(err);
		if (poll(&pfd, 1, 10) == 1) {
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
			if (err) {
				fprintf(stderr, "fuzz_http: connect: %s\n", strerror(err));
				abort();
			}
			break;
		}
		uv_run(srv.loop, UV_RUN_NOWAIT); /* let the server accept */
	}
	fcntl(fd, F_SETFL, 0);
	size_t off = 0;
	while (off < size) {
		ssize_t w = write(fd, data + off, size - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	char buf[65536];
	uint64_t deadline = sh_mono_ns() + 5000000000ull;
	for (;;) {
		uv_run(srv.loop, UV_RUN_NOWAIT);
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			break; /* the server closed: done */
		if (n < 0) {
			if (sh_mono_ns() > deadline) {
				fprintf(stderr, "fuzz_http: no answer: %u connections open, %" PRIu64
						" jobs busy, writer backlog %" PRIu64 "\n",
					http_conns(&srv), srv.busy, writer_backlog(srv.writer));
				abort(); /* the server neither answered nor closed */
			}
			usleep(100);
		}
	}
	close(fd);
	return 0;
}
