/* shahidi-server: the sync daemon phones talk to. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include "common.h"
#include "config.h"
#include "files.h"
#include "http.h"
#include "server.h"

/* The configuration file read when --config is not given (meson sets it
 * from sysconfdir). */
#ifndef SHAHIDI_CONFIG
#define SHAHIDI_CONFIG "/etc/shahidi/shahidi.conf"
#endif

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: shahidi-server [OPTIONS]\n\n"
		"Serves Shahidi's sync API (push, pull, forms) over HTTP/1.1 from the store in\n"
		"the data directory. Plain HTTP on loopback only, unless --allow-plaintext: put\n"
		"TLS in front (tools/nginx-shahidi.conf). SIGINT or SIGTERM stops it cleanly:\n"
		"pushes being committed are finished and acknowledged first.\n\n"
		"  --config FILE          settings: 'key = value' lines whose keys are these\n"
		"                         flags without '--' (default " SHAHIDI_CONFIG ",\n"
		"                         when it exists); flags win over the file\n"
		"  --data DIR             data directory (default ./shahidi-data; made 0700)\n"
		"  --listen HOST:PORT     address (default 127.0.0.1:8080; port 0 = any free)\n"
		"  --allow-plaintext      allow plain HTTP on a non-loopback address\n"
		"  --forms PATH           more form definitions (a JSON file or a directory)\n"
		"  --max-body SIZE        request body as sent (default 16M) -> 413\n"
		"  --max-inflated SIZE    push body after inflating (default 32M) -> 413\n"
		"  --max-changes N        changes per batch (default 5000) -> 413\n"
		"  --max-header SIZE      request line and headers (default 8K) -> 431\n"
		"  --header-timeout SEC   to receive the headers (default 15) -> 408\n"
		"  --body-timeout SEC     to receive the body (default 300: 2G is slow) -> 408\n"
		"  --body-stall SEC       a body with no new byte for that long (default 30) -> 408\n"
		"  --idle-timeout SEC     keep-alive connection without a request (default 60),\n"
		"                         from when the client has received the last answer\n"
		"  --write-timeout SEC    an answer the client does not take for that long\n"
		"                         (default 60): its connection is dropped\n"
		"  --max-conns N          open connections; more get 503 (default 4096)\n"
		"  --max-queue N          batches waiting for the writer before reading\n"
		"                         pauses (default 128; the rest wait in the kernel's\n"
		"                         socket buffers, not in the server's memory)\n"
		"  --max-inflight SIZE    request bodies held at once before reading pauses\n"
		"                         (default 64M)\n"
		"  --pull-limit N         most changes in one pull response (default 1000)\n"
		"  --commit-window-ms MS  a commit waits at most this long for more batches\n"
		"                         when more are likely (pushes being decoded, or\n"
		"                         other phones pushing), so that they share one\n"
		"                         fsync; a lone phone's push never waits (default 5;\n"
		"                         0: off; at most 100)\n"
		"  --map-size SIZE        initial store map size (default 4G of address space;\n"
		"                         grows)\n"
		"  --max-map SIZE         the store's size cap (default 1T) -> 507 when full\n"
		"  --release-above SIZE   the store's pages mapped in memory before the server\n"
		"                         lets go of them (default 512M; sooner when the\n"
		"                         machine runs short of memory)\n"
		"  --max-skew SEC         stamps further ahead than this do not move the\n"
		"                         server's clock (3600; they are kept as sent)\n"
		"  --i-know-the-store-is-damaged\n"
		"                         serve a store whose hash chain's last links do not\n"
		"                         verify (refused otherwise; said on every start)\n"
		"  --quiet                no per-request log lines\n"
		"  --trust-proxy          take the client's address from X-Forwarded-For when\n"
		"                         the connection comes from this machine (nginx)\n"
		"  --auth-burst N         refused tokens an address may send (20), then one\n"
		"  --auth-refill SEC      more per SEC (3); beyond that: 429\n"
		"  --max-file SIZE        an attachment's size (default 100M) -> 413\n"
		"  --upload-expiry DAYS   an unfinished upload is dropped after (default 14)\n"
		"  --upload-rate SIZE     uploads' bytes written to the disk a second, all\n"
		"                         together (default 0: no cap); a PATCH is answered\n"
		"                         once its bytes are written, so phones slow down\n"
		"  --version, --help\n\n"
		"SIZE takes K, M, G or T (powers of 1024). The log (stderr) has one line per\n"
		"request: never a token, never report content.\n");
}

static int parse_size(const char *s, size_t *ret)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || !(v >= 0) || !isfinite(v)) /* NaN fails the >= */
		return -EINVAL;
	double mult = 1;
	switch (*end) {
	case 'k': case 'K': mult = 1024.0; end++; break;
	case 'm': case 'M': mult = 1048576.0; end++; break;
	case 'g': case 'G': mult = 1073741824.0; end++; break;
	case 't': case 'T': mult = 1099511627776.0; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v * mult > 1e15)
		return -EINVAL;
	*ret = (size_t)(v * mult);
	return 0;
}

static int parse_secs(const char *s, unsigned *ret_ms)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v > 0) || v > 86400)
		return -EINVAL;
	*ret_ms = (unsigned)ceil(v * 1000);
	return 0;
}

static struct server srv;
static uv_signal_t sigint_h, sigterm_h;
static uv_timer_t stop_timer;
static uint64_t stop_started;

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void on_stop_tick(uv_timer_t *t)
{
	(void)t;
	bool drained = http_conns(&srv) == 0 && srv.busy == 0;
	if (!drained && sh_mono_ns() - stop_started < 20ull * 1000000000) {
		return;
	}
	if (!drained)
		fprintf(stderr, "shahidi-server: stopping with %u connection(s) still open\n",
			http_conns(&srv));
	uv_timer_stop(&stop_timer);
	writer_stop(srv.writer); /* commits and hands back what is queued */
	uv_walk(srv.loop, close_walk, NULL);
}

/* systemd's watchdog (WatchdogSec= in the unit): a ping from the event
 * loop at half the interval, so a loop stuck for that long gets the
 * server restarted. */
static uv_timer_t watchdog_timer;

static void on_watchdog(uv_timer_t *t)
{
	(void)t;
	sd_notify(0, "WATCHDOG=1");
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	if (srv.stopping)
		return;
	fprintf(stderr, "shahidi-server: %s: finishing what is being committed, then stopping\n",
		signum == SIGINT ? "SIGINT" : "SIGTERM");
	srv.stopping = true;
	sd_notify(0, "STOPPING=1");
	http_stop(&srv);
	stop_started = sh_mono_ns();
	uv_timer_start(&stop_timer, on_stop_tick, 0, 10);
}

/* Warming: libuv starts its pool's threads at the first piece of work,
 * and glibc gives each thread its heap arena at its first allocation;
 * done before the first push, so that the first second of a run is not
 * its worst. */
static uv_work_t warm_jobs[4];

static void warm_work(uv_work_t *w)
{
	(void)w;
	free(malloc(64 * 1024));
}

static void warm_done(uv_work_t *w, int status)
{
	(void)w;
	(void)status;
}

static const struct option opts[] = {
	{"data", required_argument, 0, 'd'},	     {"listen", required_argument, 0, 'l'},
	{"allow-plaintext", no_argument, 0, 'P'},    {"forms", required_argument, 0, 'f'},
	{"max-body", required_argument, 0, 'B'},     {"max-inflated", required_argument, 0, 'I'},
	{"max-changes", required_argument, 0, 'C'},  {"max-header", required_argument, 0, 'H'},
	{"header-timeout", required_argument, 0, '1'}, {"body-timeout", required_argument, 0, '2'},
	{"idle-timeout", required_argument, 0, '3'}, {"max-conns", required_argument, 0, 'c'},
	{"max-queue", required_argument, 0, 'q'},    {"max-inflight", required_argument, 0, 'i'},
	{"pull-limit", required_argument, 0, 'p'},   {"map-size", required_argument, 0, 'm'},
	{"max-map", required_argument, 0, 'M'},	     {"max-skew", required_argument, 0, 's'},
	{"quiet", no_argument, 0, 'Q'},		     {"version", no_argument, 0, 'V'},
	{"trust-proxy", no_argument, 0, 'T'},	     {"auth-burst", required_argument, 0, 'a'},
	{"auth-refill", required_argument, 0, 'A'}, {"body-stall", required_argument, 0, '4'},
	{"i-know-the-store-is-damaged", no_argument, 0, 'D'},
	{"max-file", required_argument, 0, '5'},    {"upload-expiry", required_argument, 0, '6'},
	{"upload-rate", required_argument, 0, '7'},  {"write-timeout", required_argument, 0, '8'},
	{"commit-window-ms", required_argument, 0, 'W'},
	{"release-above", required_argument, 0, 'R'}, {"config", required_argument, 0, 'F'},
	{"help", no_argument, 0, 'h'},		     {0, 0, 0, 0},
};

/* Applies one setting, from a flag or from the configuration file (the
 * same code for both, so that a key and its flag mean the same). val is
 * NULL for a switch. false when the value is bad. */
static bool apply_opt(struct server_config *cfg, int c, const char *val)
{
	size_t sz = 0; /* parse_size leaves it alone on failure */
	unsigned ms = 0;
	bool bad = false;
	switch (c) {
	case 'd': cfg->data_dir = val; break;
	case 'l': cfg->listen = val; break;
	case 'P': cfg->allow_plaintext = true; break;
	case 'f': cfg->forms_path = val; break;
	case 'Q': cfg->quiet = true; break;
	case 'T': cfg->trust_proxy = true; break;
	case 'D': cfg->damaged_ok = true; break;
	case 'a':
		bad = parse_size(val, &sz) < 0 || sz < 1 || sz > 1000000;
		cfg->auth_burst = (unsigned)sz;
		break;
	case 'A': bad = parse_secs(val, &cfg->auth_refill_ms) < 0; break;
	case 'B': bad = parse_size(val, &cfg->max_body) < 0 || !cfg->max_body; break;
	case 'I': bad = parse_size(val, &cfg->sync.max_inflated) < 0; break;
	case 'H': bad = parse_size(val, &cfg->max_header) < 0 || cfg->max_header < 256; break;
	case 'i': bad = parse_size(val, &cfg->max_inflight) < 0; break;
	case 'm': bad = parse_size(val, &cfg->map_size) < 0; break;
	case 'M': bad = parse_size(val, &cfg->max_map_size) < 0; break;
	case 'R': bad = parse_size(val, &cfg->release_above) < 0 || !cfg->release_above; break;
	case 'C':
		bad = parse_size(val, &sz) < 0 || sz < 1 || sz > 1000000;
		cfg->sync.max_changes = sz;
		break;
	case 'c':
		bad = parse_size(val, &sz) < 0 || sz < 1 || sz > 1000000;
		cfg->max_conns = (unsigned)sz;
		break;
	case 'q':
		bad = parse_size(val, &sz) < 0 || sz < 1 || sz > 1000000;
		cfg->max_queue = (unsigned)sz;
		break;
	case 'p':
		bad = parse_size(val, &sz) < 0 || sz < 1 || sz > 100000;
		cfg->pull_limit = (uint32_t)sz;
		break;
	case '1': bad = parse_secs(val, &cfg->header_timeout_ms) < 0; break;
	case '2': bad = parse_secs(val, &cfg->body_timeout_ms) < 0; break;
	case '4': bad = parse_secs(val, &cfg->body_stall_ms) < 0; break;
	case '3': bad = parse_secs(val, &cfg->idle_timeout_ms) < 0; break;
	case '8': bad = parse_secs(val, &cfg->write_timeout_ms) < 0 || !cfg->write_timeout_ms; break;
	case '5': bad = parse_size(val, &cfg->max_file) < 0; break;
	case '7': bad = parse_size(val, &cfg->upload_rate) < 0; break;
	case 'W': {
		char *end;
		errno = 0;
		double v = strtod(val, &end);
		bad = errno || end == val || *end || !(v >= 0) || v * 1000 > WRITER_MAX_WINDOW_US;
		cfg->commit_window_us = bad ? cfg->commit_window_us : (unsigned)lround(v * 1000);
		break;
	}
	case '6': {
		char *end;
		double d = strtod(val, &end);
		bad = end == val || *end || !(d > 0) || d > 3650;
		cfg->upload_expiry_ms = (uint64_t)(d * 86400 * 1000);
		break;
	}
	case 's':
		bad = parse_secs(val, &ms) < 0;
		cfg->max_skew_ms = ms;
		break;
	default: bad = true; break;
	}
	return !bad;
}

/* Applies the configuration file's entries: each key is a long flag's
 * name. 0, or -EINVAL after saying which line is wrong. */
static int apply_config(struct server_config *cfg, const struct config *conf)
{
	for (size_t i = 0; i < conf->n; i++) {
		const struct config_entry *e = &conf->entries[i];
		const struct option *o = opts;
		while (o->name && strcmp(o->name, e->key))
			o++;
		if (!o->name || o->val == 'h' || o->val == 'V' || o->val == 'F') {
			fprintf(stderr,
				"shahidi-server: %s:%u: unknown key '%s' (the keys are the long flags "
				"of --help, without '--')\n",
				conf->path, e->line, e->key);
			return -EINVAL;
		}
		bool ok;
		if (o->has_arg == no_argument) {
			int b = config_bool(e->value);
			ok = b >= 0 && (b == 0 || apply_opt(cfg, o->val, NULL));
		} else {
			ok = *e->value && apply_opt(cfg, o->val, e->value);
		}
		if (!ok) {
			fprintf(stderr, "shahidi-server: %s:%u: bad value '%s' for key '%s'%s\n",
				conf->path, e->line, e->value, e->key,
				o->has_arg == no_argument ? " (true or false)" : " (see --help)");
			return -EINVAL;
		}
	}
	return 0;
}

static int serve(const char *conf_path);


int main(int argc, char **argv)
{
	struct server_config *cfg = &srv.cfg;
	server_config_default(cfg);
	int c, li = -1;
	/* First pass: --config, --help and --version only, so that the file
	 * is read before the flags, which win over it. */
	const char *conf_path = NULL;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'F')
			conf_path = optarg;
		if (c == 'V') {
			printf("shahidi-server %s\n", SHAHIDI_VERSION);
			return 0;
		}
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
	}
	struct config *conf = NULL;
	char err[512];
	int r = config_load(conf_path ? conf_path : SHAHIDI_CONFIG, &conf, err, sizeof(err));
	if (r < 0 && (r != -ENOENT || conf_path)) {
		fprintf(stderr, "shahidi-server: configuration: %s\n", err);
		return 2;
	}
	if (conf && apply_config(cfg, conf) < 0) {
		config_free(conf);
		return 2;
	}
	opterr = 1;
	optind = 0; /* glibc: start again from the first argument */
	while ((li = -1, c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
		if (c == 'F')
			continue;
		if (c == '?' || c == ':') {
			usage(stderr);
			config_free(conf);
			return 2;
		}
		if (!apply_opt(cfg, c, optarg)) {
			/* Every flag with a value is a long option: getopt_long says
			 * which, whether given as --flag=V, --flag V or abbreviated. */
			fprintf(stderr, "shahidi-server: bad value '%s' for --%s (see --help)\n", optarg,
				li >= 0 ? opts[li].name : "?");
			config_free(conf);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "shahidi-server: unexpected argument '%s' (see --help)\n", argv[optind]);
		config_free(conf);
		return 2;
	}
	r = serve(conf ? conf->path : NULL);
	config_free(conf);
	return r;
}

/* Runs the server until a signal stops it: the exit code. conf_path: the
 * configuration file read, or NULL. */
static int serve(const char *conf_path)
{
	struct server_config *cfg = &srv.cfg;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN); /* a file size limit fails the write (EFBIG: 507), not us */
	/* glibc gives each thread-pool thread its own malloc arena and keeps
	 * what they free: with batches decoded on four threads, most of the
	 * server's memory sat in idle arenas. Two are enough. */
	mallopt(M_ARENA_MAX, 2);
	/* Thousands of phones may hold connections: use every descriptor the
	 * system allows us. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	char err[512];
	if (conf_path)
		fprintf(stderr, "shahidi-server: configuration from %s\n", conf_path);
	/* systemctl status shows it while a format upgrade merges records. */
	sd_notifyf(0, "STATUS=opening the store in %s", cfg->data_dir);
	if (server_init(&srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "shahidi-server: %s\n", err);
		server_free(&srv);
		return 1;
	}
	/* One server per store, and none while `shahidi erase` compacts it. */
	char lockpath[4096];
	snprintf(lockpath, sizeof(lockpath), "%s/server.lock", cfg->data_dir);
	int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "shahidi-server: %s: %s\n", lockpath,
			errno == EWOULDBLOCK ? "another shahidi-server, or `shahidi erase`, holds this store"
					     : strerror(errno));
		server_free(&srv);
		return 1;
	}
	/* The last links of the chain, and the head the store keeps, before
	 * anything is served or appended after them. */
	int64_t broken = store_verify_tail(srv.store, 1000);
	if (broken && !cfg->damaged_ok) {
		fprintf(stderr,
			"shahidi-server: the store's hash chain does not verify (at log entry %lld, or "
			"it cannot be read): refusing to serve it. Run `shahidi verify --data %s`; "
			"--i-know-the-store-is-damaged serves it anyway.\n",
			(long long)broken, cfg->data_dir);
		server_free(&srv);
		return 1;
	}
	if (cfg->damaged_ok)
		fprintf(stderr,
			"shahidi-server: started with --i-know-the-store-is-damaged; the chain's last "
			"links %s\n",
			broken ? "do NOT verify: serving a damaged store" : "verify");
	uv_signal_init(srv.loop, &sigint_h);
	uv_signal_init(srv.loop, &sigterm_h);
	uv_signal_start(&sigint_h, on_signal, SIGINT);
	uv_signal_start(&sigterm_h, on_signal, SIGTERM);
	uv_timer_init(srv.loop, &stop_timer);

	int r = server_start(&srv, err, sizeof(err));
	if (r < 0) {
		if (err[0])
			fprintf(stderr, "shahidi-server: %s\n", err);
		srv.stopping = true;
		if (srv.writer)
			writer_stop(srv.writer);
		uv_walk(srv.loop, close_walk, NULL);
		uv_run(srv.loop, UV_RUN_DEFAULT);
		store_close(srv.store);
		return 1;
	}
	/* Under systemd (Type=notify): the store is open and verified and the
	 * socket listens, so the unit is started; without NOTIFY_SOCKET these
	 * are no-ops. */
	uint64_t wd_usec = 0;
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec >= 2000) {
		uv_timer_init(srv.loop, &watchdog_timer);
		uv_timer_start(&watchdog_timer, on_watchdog, 0, wd_usec / 2000);
	}
	sd_notifyf(0, "READY=1\nSTATUS=serving %s on %s", cfg->data_dir, cfg->listen);
	if ((r = files_start(&srv)) < 0)
		fprintf(stderr, "shahidi-server: expired uploads will not be dropped: %s\n",
			uv_strerror(r));
	struct store_txn *t;
	struct store_info info = {0};
	if (store_begin(srv.store, false, &t) == 0) {
		store_info(t, &info);
		store_abort(t);
	}
	fprintf(stderr, "shahidi-server %s: store %s (%" PRIu64 " records, %" PRIu64
			" log entries), %zu form version(s)\n",
		SHAHIDI_VERSION, cfg->data_dir, info.records, info.log_entries,
		form_registry_count(srv.forms));

	for (size_t i = 0; i < SH_ARRAY_SIZE(warm_jobs); i++)
		uv_queue_work(srv.loop, &warm_jobs[i], warm_work, warm_done);
	uv_run(srv.loop, UV_RUN_DEFAULT);

	if (getenv("SHAHIDI_MALLOC_STATS"))
		malloc_stats(); /* to stderr: where the server's own memory went */
	r = uv_loop_close(srv.loop);
	server_free(&srv);
	if (r != 0) {
		fprintf(stderr, "shahidi-server: event loop did not close cleanly: %s\n",
			uv_strerror(r));
		return 1;
	}
	fprintf(stderr, "shahidi-server: stopped\n");
	return 0;
}
