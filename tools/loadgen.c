/* shahidi-loadgen: simulates N phones pushing batches of field reports to a
 * running server over HTTP/1.1, then pulling; measures throughput, latency
 * and bytes on the wire; and checks that the store holds every acknowledged
 * change exactly once. See loadgen.h for how a run is organised. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "arena.h"
#include "auth.h"
#include "buf.h"
#include "client.h"
#include "common.h"
#include "form.h"
#include "loadgen.h"
#include "store.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define DEFAULT_SERVER "http://127.0.0.1:8080"
/* Changes made before the run starts are held in memory (~400 bytes each,
 * deflated): this keeps a mistyped count from eating the machine. */
#define MAX_TOTAL_CHANGES 20000000ull

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: shahidi-loadgen [OPTIONS]\n\n"
		"Simulates phones that made reports offline and now sync with a running\n"
		"shahidi-server: each device pushes its changes in batches over its own\n"
		"keep-alive HTTP/1.1 connection (deflated protobuf), all devices at once,\n"
		"then pulls its feed. Reports throughput, push latency, bytes on the wire\n"
		"and errors, the machine's steal time during the push (CPU time its\n"
		"hypervisor gave to others), and with --data checks that the store holds\n"
		"every acknowledged change exactly once and the conflicts the workload made.\n\n"
		"The workload is fixed by the seed: mostly new incident reports (the form's\n"
		"vocabularies, narratives of 500-800 bytes, version 7 ids), some edits of the\n"
		"device's own records, some edits of records shared by every device (device 0\n"
		"creates them in its first batch; devices editing the same one conflict), a\n"
		"few deletions. Every batch is made before the clock starts.\n\n"
		"  --server URL          http://HOST[:PORT] (default " DEFAULT_SERVER ")\n"
		"  --devices N           simulated devices, one connection each (default 8)\n"
		"  --batch B             changes per push (default 100)\n"
		"  --changes C           changes per device (default 1000)\n"
		"  --seconds S           no new batch after S seconds; batches in flight are\n"
		"                        finished (default 60)\n"
		"  --rate N              offer N changes/s in all (batches paced on one\n"
		"                        schedule), to measure latency below saturation;\n"
		"                        default 0: each device sends as soon as answered\n"
		"  --seed N              workload seed (default 1)\n"
		"  --data DIR            the server's data directory: enrol the devices there\n"
		"                        (beside the running server) and verify at the end\n"
		"  --tokens FILE         use enrolled devices instead: lines 'DEVICE_HEX TOKEN'\n"
		"                        (the first N are used)\n"
		"  --verify, --no-verify check the store at the end (default: with --data)\n"
		"  --server-pid PID      sample the server's RSS (max, final) and CPU time\n"
		"  --json                print the report as one JSON object\n"
		"  --shared N            shared records (default 8; at most B)\n"
		"  --edits PCT           edits of own records, %% of changes (default 10)\n"
		"  --shared-edits PCT    edits of shared records, %% of changes (default 3)\n"
		"  --deletes PCT         deletions and undeletions, %% of changes (default 1)\n"
		"  --groups E,A,R        repeat groups (incident report v3 instead of v1):\n"
		"                        edits of a victim of its own records, perpetrators\n"
		"                        added to shared records by every phone at once,\n"
		"                        victims removed, each %% of changes (e.g. 10,3,1);\n"
		"                        without it the mix is as above, on v1\n"
		"  --timeout SEC         per request (default 30)\n"
		"  --retries N           per request, with backoff; the same bytes are resent\n"
		"                        and the server deduplicates (default 8)\n"
		"  --level N             deflate level of the batches, 1-9 (default 6)\n"
		"  --help, --version\n\n"
		"Environment: SHAHIDI_METRICS_TOKEN, a token of the metrics role: the\n"
		"server's writer counters (/metrics) are read when the push starts and\n"
		"when it ends, and what the push alone cost the writer is reported\n"
		"(commits, batches a commit, its time and CPU in them), without the\n"
		"pulls after it. Not an option: tokens on a command line are visible\n"
		"to every user of the machine.\n\n"
		"Exit status: 0 done; 1 the store lost or duplicated data (VERIFY FAILED),\n"
		"nothing was acknowledged, or the run could not be set up; 2 bad usage.\n");
}

/* ---- small helpers the other files share ---- */

int lg_count(struct lg_counters *c, const char *key, uint64_t n)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strncmp(c->v[i].key, key, sizeof(c->v[i].key) - 1)) {
			c->v[i].n += n;
			return 0;
		}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct lg_counter *v = realloc(c->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	snprintf(c->v[c->n].key, sizeof(c->v[c->n].key), "%s", key);
	c->v[c->n++].n = n;
	return 0;
}

void lg_counters_free(struct lg_counters *c)
{
	free(c->v);
	*c = (struct lg_counters){0};
}

int lg_proc_rss_kb(int pid, uint64_t *ret_kb, uint64_t *ret_anon_kb)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	uint64_t rss = 0, anon = 0;
	int seen = 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "VmRSS:", 6)) {
			rss = strtoull(line + 6, NULL, 10);
			seen |= 1;
		} else if (!strncmp(line, "RssAnon:", 8)) {
			anon = strtoull(line + 8, NULL, 10);
			seen |= 2;
		}
	}
	fclose(f);
	if (!(seen & 1))
		return -ENOENT;
	*ret_kb = rss;
	*ret_anon_kb = seen & 2 ? anon : rss;
	return 0;
}

int lg_proc_cpu_s(int pid, double *ret_s)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	char *ok = fgets(line, sizeof(line), f);
	fclose(f);
	/* The name in parentheses may hold spaces: count from its end. */
	char *p = ok ? strrchr(line, ')') : NULL;
	unsigned long long utime, stime;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
			 &stime) != 2)
		return -EPROTO;
	*ret_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

int lg_steal_s(double *ret_s)
{
	char line[512];
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return -errno;
	char *ok = fgets(line, sizeof(line), f);
	fclose(f);
	unsigned long long steal;
	/* cpu user nice system idle iowait irq softirq steal */
	if (!ok || sscanf(line, "cpu %*u %*u %*u %*u %*u %*u %*u %llu", &steal) != 1)
		return -EPROTO;
	*ret_s = (double)steal / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

int lg_writer_counters(const char *server, const char *token, double out[LG_WRITER_N])
{
	static const char *const names[LG_WRITER_N] = {
		[LG_COMMITS] = "shahidi_commit_seconds_count",
		[LG_COMMIT_S] = "shahidi_commit_seconds_sum",
		[LG_JOBS] = "shahidi_group_commit_jobs_sum",
		[LG_COMMIT_CPU_S] = "shahidi_commit_cpu_seconds_total",
		[LG_APPLY_CPU_S] = "shahidi_commit_apply_cpu_seconds_total",
		[LG_WINDOW_HOLDS] = "shahidi_commit_window_holds_total",
	};
	char hdr[256];
	struct client_response resp;
	if (snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", token) >= (int)sizeof(hdr))
		return -EINVAL;
	int r = client_request(server, "GET", "/metrics", hdr, NULL, 0, 5000, &resp);
	if (r < 0)
		return r;
	unsigned found = 0;
	if (resp.status == 200 && buf_append(&resp.body, "", 1) == 0) {
		for (char *line = (char *)resp.body.data; line && *line;) {
			char *end = strchr(line, '\n');
			if (end)
				*end = 0;
			for (unsigned i = 0; i < LG_WRITER_N; i++) {
				size_t n = strlen(names[i]);
				if (!strncmp(line, names[i], n) && line[n] == ' ') {
					out[i] = strtod(line + n + 1, NULL);
					found |= 1u << i;
				}
			}
			line = end ? end + 1 : NULL;
		}
	}
	client_response_free(&resp);
	return found == (1u << LG_WRITER_N) - 1 ? 0 : -EPROTO;
}

/* ---- options ---- */

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_double(const char *s, double min, double max, double *ret)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min) || !(v <= max))
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Resolves http://HOST[:PORT][/] once; the Host header is HOST[:PORT]. */
static int parse_server(struct lg_run *run, const char *url)
{
	char host[256], port[16] = "80";
	if (strncmp(url, "http://", 7))
		return -EPROTONOSUPPORT;
	const char *h = url + 7, *end = h + strcspn(h, "/");
	if (*end && strcmp(end, "/"))
		return -EINVAL; /* a path: the API lives at the root */
	const char *colon = NULL;
	if (*h == '[') {
		const char *rb = memchr(h, ']', (size_t)(end - h));
		if (!rb || rb - h - 1 >= (long)sizeof(host))
			return -EINVAL;
		if (rb + 1 < end && rb[1] != ':')
			return -EINVAL;
		colon = rb + 1 < end ? rb + 1 : NULL;
		snprintf(host, sizeof(host), "%.*s", (int)(rb - h - 1), h + 1);
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		if ((colon ? colon : end) - h >= (long)sizeof(host))
			return -EINVAL;
		snprintf(host, sizeof(host), "%.*s", (int)((colon ? colon : end) - h), h);
	}
	if (colon) {
		if (end - colon - 1 <= 0 || end - colon - 1 >= (long)sizeof(port))
			return -EINVAL;
		snprintf(port, sizeof(port), "%.*s", (int)(end - colon - 1), colon + 1);
	}
	if (!host[0])
		return -EINVAL;
	snprintf(run->host_hdr, sizeof(run->host_hdr), "%.*s", (int)(end - h), h);

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -EHOSTUNREACH;
	memcpy(&run->addr, ai->ai_addr, SH_MIN((size_t)ai->ai_addrlen, sizeof(run->addr)));
	freeaddrinfo(ai);
	return 0;
}

enum {
	O_SERVER = 1000, O_DEVICES, O_BATCH, O_CHANGES, O_SECONDS, O_SEED, O_DATA, O_TOKENS,
	O_JSON, O_PID, O_VERIFY, O_NO_VERIFY, O_SHARED, O_EDITS, O_SHARED_EDITS, O_DELETES,
	O_TIMEOUT, O_RETRIES, O_LEVEL, O_VERSION, O_RATE, O_GROUPS,
};

/* Returns -1 to go on, else an exit code. */
static int parse_args(int argc, char **argv, struct lg_opts *o)
{
	static const struct option opts[] = {
		{"server", required_argument, 0, O_SERVER},
		{"devices", required_argument, 0, O_DEVICES},
		{"batch", required_argument, 0, O_BATCH},
		{"changes", required_argument, 0, O_CHANGES},
		{"seconds", required_argument, 0, O_SECONDS},
		{"seed", required_argument, 0, O_SEED},
		{"rate", required_argument, 0, O_RATE},
		{"data", required_argument, 0, O_DATA},
		{"tokens", required_argument, 0, O_TOKENS},
		{"json", no_argument, 0, O_JSON},
		{"server-pid", required_argument, 0, O_PID},
		{"verify", no_argument, 0, O_VERIFY},
		{"no-verify", no_argument, 0, O_NO_VERIFY},
		{"shared", required_argument, 0, O_SHARED},
		{"edits", required_argument, 0, O_EDITS},
		{"shared-edits", required_argument, 0, O_SHARED_EDITS},
		{"deletes", required_argument, 0, O_DELETES},
		{"timeout", required_argument, 0, O_TIMEOUT},
		{"retries", required_argument, 0, O_RETRIES},
		{"level", required_argument, 0, O_LEVEL},
		{"groups", required_argument, 0, O_GROUPS},
		{"help", no_argument, 0, 'h'},
		{"version", no_argument, 0, O_VERSION},
		{0, 0, 0, 0},
	};
	int verify = -1, c;
	uint64_t u;
	double x;
	double pct[3] = {10, 3, 1};
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		const char *bad = NULL;
		switch (c) {
		case O_SERVER:
			o->server = optarg;
			break;
		case O_DEVICES:
			if (parse_u64(optarg, 1, 100000, &u) < 0)
				bad = "--devices takes 1 to 100000";
			o->devices = (unsigned)u;
			break;
		case O_BATCH:
			if (parse_u64(optarg, 1, 5000, &u) < 0)
				bad = "--batch takes 1 to 5000 (the server's default cap)";
			o->batch = (unsigned)u;
			break;
		case O_CHANGES:
			if (parse_u64(optarg, 1, MAX_TOTAL_CHANGES, &o->changes) < 0)
				bad = "--changes takes a number from 1";
			break;
		case O_SECONDS:
			if (parse_double(optarg, 0.001, 86400 * 7, &o->seconds) < 0)
				bad = "--seconds takes a positive number";
			break;
		case O_RATE:
			if (parse_double(optarg, 0, 1e9, &o->rate) < 0)
				bad = "--rate takes changes per second (0 = unpaced)";
			break;
		case O_SEED:
			if (parse_u64(optarg, 0, UINT64_MAX, &o->seed) < 0)
				bad = "--seed takes a number";
			break;
		case O_DATA:
			o->data = optarg;
			break;
		case O_TOKENS:
			o->tokens = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_PID:
			if (parse_u64(optarg, 1, INT32_MAX, &u) < 0)
				bad = "--server-pid takes a process id";
			o->server_pid = (int)u;
			break;
		case O_VERIFY:
			verify = 1;
			break;
		case O_NO_VERIFY:
			verify = 0;
			break;
		case O_SHARED:
			if (parse_u64(optarg, 0, 5000, &u) < 0)
				bad = "--shared takes 0 to 5000";
			o->shared = (unsigned)u;
			break;
		case O_EDITS:
		case O_SHARED_EDITS:
		case O_DELETES:
			if (parse_double(optarg, 0, 100, &x) < 0)
				bad = "--edits, --shared-edits and --deletes take a percentage";
			pct[c - O_EDITS] = x;
			break;
		case O_TIMEOUT:
			if (parse_double(optarg, 0.01, 3600, &x) < 0)
				bad = "--timeout takes seconds";
			o->timeout_ms = (unsigned)ceil(x * 1000);
			break;
		case O_RETRIES:
			if (parse_u64(optarg, 0, 1000, &u) < 0)
				bad = "--retries takes 0 to 1000";
			o->retries = (unsigned)u;
			break;
		case O_GROUPS: {
			double g[3];
			char tail;
			if (sscanf(optarg, "%lf,%lf,%lf%c", &g[0], &g[1], &g[2], &tail) != 3 ||
			    g[0] < 0 || g[1] < 0 || g[2] < 0 || g[0] + g[1] + g[2] > 100) {
				bad = "--groups takes EDITS,ADDS,REMOVALS: three percentages";
				break;
			}
			o->groups = true;
			o->pct_gedit = (unsigned)lround(g[0] * 10);
			o->pct_gadd = (unsigned)lround(g[1] * 10);
			o->pct_gremove = (unsigned)lround(g[2] * 10);
			break;
		}
		case O_LEVEL:
			if (parse_u64(optarg, 1, 9, &u) < 0)
				bad = "--level takes 1 to 9";
			o->level = (int)u;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case O_VERSION:
			printf("shahidi-loadgen %s\n", SHAHIDI_VERSION);
			return 0;
		default:
			return EXIT_USAGE;
		}
		if (bad) {
			fprintf(stderr, "shahidi-loadgen: %s\n", bad);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "shahidi-loadgen: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	if (!o->data && !o->tokens) {
		fprintf(stderr, "shahidi-loadgen: give --data DIR (enrol devices in the server's "
				"store) or --tokens FILE\n");
		return EXIT_USAGE;
	}
	if (verify == 1 && !o->data) {
		fprintf(stderr, "shahidi-loadgen: --verify reads the store: it needs --data DIR\n");
		return EXIT_USAGE;
	}
	if (pct[0] + pct[1] + pct[2] > 100) {
		fprintf(stderr, "shahidi-loadgen: edits, shared edits and deletes add up to more "
				"than 100%%\n");
		return EXIT_USAGE;
	}
	if ((uint64_t)o->devices * o->changes > MAX_TOTAL_CHANGES) {
		fprintf(stderr, "shahidi-loadgen: devices x changes is at most %llu (every "
				"batch is made in memory first)\n",
			MAX_TOTAL_CHANGES);
		return EXIT_USAGE;
	}
	o->verify = verify < 0 ? o->data != NULL : verify == 1;
	o->pct_edit = (unsigned)lround(pct[0] * 10);
	o->pct_shared = (unsigned)lround(pct[1] * 10);
	o->pct_delete = (unsigned)lround(pct[2] * 10);
	if (o->pct_edit + o->pct_shared + o->pct_delete + o->pct_gedit + o->pct_gadd +
		    o->pct_gremove > 1000) {
		fprintf(stderr, "shahidi-loadgen: edits, shared edits, deletes and --groups add up "
				"to more than 100%%\n");
		return EXIT_USAGE;
	}
	return -1;
}

/* ---- devices and tokens ---- */

static int read_tokens(struct lg_run *run, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[512];
	unsigned n = 0, lineno = 0;
	if (!f) {
		fprintf(stderr, "shahidi-loadgen: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	while (n < run->n_dev && fgets(line, sizeof(line), f)) {
		char hex[64], tok[128];
		lineno++;
		if (line[strspn(line, " \t\r\n")] == 0 || line[strspn(line, " \t")] == '#')
			continue;
		if (sscanf(line, "%63s %127s", hex, tok) != 2 ||
		    sh_device_parse(hex, &run->dev[n].id) < 0) {
			fprintf(stderr, "shahidi-loadgen: %s:%u: expected 'DEVICE_HEX TOKEN'\n",
				path, lineno);
			fclose(f);
			return -EINVAL;
		}
		snprintf(run->dev[n].token, sizeof(run->dev[n].token), "%s", tok);
		n++;
	}
	fclose(f);
	if (n < run->n_dev) {
		fprintf(stderr, "shahidi-loadgen: %s holds %u devices, --devices asks for %u\n",
			path, n, run->n_dev);
		return -EINVAL;
	}
	return 0;
}

struct enrol_ctx {
	struct lg_run *run;
	char err[256];
};

/* Enrols every device in one transaction; repeatable (store_write may run
 * it again after growing the map). */
static int enrol_fn(struct store_txn *t, void *ud)
{
	struct enrol_ctx *ctx = ud;
	struct lg_run *run = ctx->run;
	for (unsigned i = 0; i < run->n_dev; i++) {
		char name[64], token[AUTH_TOKEN_LEN + 1];
		snprintf(name, sizeof(name), "loadgen seed %" PRIu64 " device %u", run->o.seed, i);
		struct auth_enrol e = {.name = name, .county = "047", .role = ROLE_DEVICE};
		int r = auth_enrol(t, &e, sh_now_ms(), &run->dev[i].id, token, ctx->err,
				   sizeof(ctx->err));
		if (r < 0)
			return r;
		snprintf(run->dev[i].token, sizeof(run->dev[i].token), "%s", token);
	}
	return 0;
}

/* Enrols the devices (unless tokens were given) and notes how long the log
 * was before the run, for verification. */
static int prepare_store(struct lg_run *run)
{
	struct store *s;
	struct store_txn *t;
	struct store_info info;
	char err[256];
	struct enrol_ctx ctx = {.run = run};
	int r = store_open(run->o.data, NULL, &s, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "shahidi-loadgen: %s\n", err);
		return r;
	}
	if (!run->o.tokens && (r = store_write(s, enrol_fn, &ctx)) < 0) {
		fprintf(stderr, "shahidi-loadgen: cannot enrol devices: %s\n",
			r == -EINVAL ? ctx.err : sh_strerror(r));
		goto out;
	}
	if ((r = store_begin(s, false, &t)) < 0)
		goto out;
	r = store_info(t, &info);
	store_abort(t);
	if (r == 0)
		run->v.log_before = info.log_entries;
out:
	if (r < 0 && r != -EINVAL)
		fprintf(stderr, "shahidi-loadgen: %s: %s\n", run->o.data, sh_strerror(r));
	store_close(s);
	return r;
}

int lg_assign_shared(struct lg_run *run)
{
	struct store *s;
	char err[256];
	if (run->o.tokens || !run->n_shared || run->n_dev < 2)
		return 0;
	int r = store_open(run->o.data, NULL, &s, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "shahidi-loadgen: %s\n", err);
		return r;
	}
	if ((r = store_write(s, lg_assign_txn, run)) < 0)
		fprintf(stderr, "shahidi-loadgen: cannot assign the shared records: %s\n",
			sh_strerror(r));
	store_close(s);
	return r;
}

/* More descriptors than devices: one socket each, plus the store's. */
static void raise_fd_limit(unsigned devices)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = (rlim_t)devices + 64;
	if (rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- the report ---- */

struct summary {
	uint64_t acked, applied, duplicate, rejected, in_doubt, failed, unsent, total;
	double push_s, pull_s, changes_per_s, batches_per_s;
	double p50, p95, p99, max, mean; /* ms */
	/* The first second apart (phones starting at once, a cold server),
	 * and the rest: the steady state. */
	double first_s_max, steady_p50, steady_p99;
	size_t n_steady;
	double req_per_change, resp_per_change;
	double self_cpu_s;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values, in ms. */
static double pct_ms(const uint32_t *v, size_t n, double q)
{
	if (!n)
		return 0;
	size_t i = (size_t)ceil(q * (double)n);
	return (double)v[i ? i - 1 : 0] / 1000.0;
}

static void summarise(struct lg_run *run, struct summary *s)
{
	struct lg_stats *st = &run->st;
	*s = (struct summary){0};
	for (unsigned i = 0; i < run->n_dev; i++)
		for (size_t k = 0; k < run->dev[i].n_changes; k++) {
			s->total++;
			switch (run->dev[i].changes[k].status) {
			case LG_APPLIED: s->applied++; break;
			case LG_DUPLICATE: s->duplicate++; break;
			case LG_REJECTED: s->rejected++; break;
			case LG_IN_DOUBT: s->in_doubt++; break;
			case LG_FAILED: s->failed++; break;
			default: s->unsent++; break;
			}
		}
	s->acked = s->applied + s->duplicate;
	s->push_s = (double)(st->push_end_ns - st->push_start_ns) / 1e9;
	s->pull_s = (double)(st->pull_end_ns - st->pull_start_ns) / 1e9;
	if (s->push_s > 0) {
		s->changes_per_s = (double)s->acked / s->push_s;
		s->batches_per_s = (double)st->batches_acked / s->push_s;
	}
	uint32_t *steady = malloc((st->n_lat + 1) * sizeof(*steady));
	for (size_t i = 0; steady && i < st->n_lat; i++) {
		if (st->lat_at_ms[i] < 1000)
			s->first_s_max = SH_MAX(s->first_s_max, (double)st->lat_us[i] / 1000.0);
		else
			steady[s->n_steady++] = st->lat_us[i];
	}
	if (steady) {
		qsort(steady, s->n_steady, sizeof(*steady), cmp_u32);
		s->steady_p50 = pct_ms(steady, s->n_steady, 0.50);
		s->steady_p99 = pct_ms(steady, s->n_steady, 0.99);
		free(steady);
	}
	qsort(st->lat_us, st->n_lat, sizeof(*st->lat_us), cmp_u32);
	s->p50 = pct_ms(st->lat_us, st->n_lat, 0.50);
	s->p95 = pct_ms(st->lat_us, st->n_lat, 0.95);
	s->p99 = pct_ms(st->lat_us, st->n_lat, 0.99);
	s->max = st->n_lat ? (double)st->lat_us[st->n_lat - 1] / 1000.0 : 0;
	uint64_t sum = 0;
	for (size_t i = 0; i < st->n_lat; i++)
		sum += st->lat_us[i];
	s->mean = st->n_lat ? (double)sum / (double)st->n_lat / 1000.0 : 0;
	if (s->acked) {
		s->req_per_change = (double)st->push_sent_bytes / (double)s->acked;
		s->resp_per_change = (double)st->push_recv_bytes / (double)s->acked;
	}
}

static json_t *counters_json(const struct lg_counters *c)
{
	json_t *o = json_object();
	for (size_t i = 0; o && i < c->n; i++)
		json_object_set_new(o, c->v[i].key, json_integer((json_int_t)c->v[i].n));
	return o;
}

static void seti(json_t *o, const char *key, uint64_t v)
{
	json_object_set_new(o, key, json_integer((json_int_t)v));
}

static void setf(json_t *o, const char *key, double v)
{
	json_object_set_new(o, key, json_real(v));
}

static json_t *sub(json_t *o, const char *key)
{
	json_t *x = json_object();
	json_object_set_new(o, key, x);
	return x;
}

static void print_json(struct lg_run *run, const struct summary *s)
{
	const struct lg_opts *o = &run->o;
	const struct lg_stats *st = &run->st;
	json_t *j = json_object(), *x;

	x = sub(j, "config");
	json_object_set_new(x, "server", json_string(o->server));
	seti(x, "devices", run->n_dev);
	seti(x, "batch", o->batch);
	seti(x, "changes_per_device", o->changes);
	setf(x, "seconds", o->seconds);
	setf(x, "rate", o->rate);
	seti(x, "seed", o->seed);
	seti(x, "shared_records", run->n_shared);

	x = sub(j, "workload");
	seti(x, "changes", s->total);
	seti(x, "batches", run->total_batches);
	double n = s->total ? (double)s->total : 1;
	setf(x, "protobuf_bytes_per_change", (double)st->raw_bytes / n);
	setf(x, "deflated_bytes_per_change", (double)st->body_bytes / n);
	setf(x, "make_seconds", (double)st->gen_ns / 1e9);

	x = sub(j, "push");
	setf(x, "seconds", s->push_s);
	seti(x, "changes_acked", s->acked);
	seti(x, "changes_applied", s->applied);
	seti(x, "changes_duplicate", s->duplicate);
	seti(x, "changes_rejected", s->rejected);
	seti(x, "changes_in_doubt", s->in_doubt);
	seti(x, "changes_refused", s->failed);
	seti(x, "changes_unsent", s->unsent);
	seti(x, "batches_acked", st->batches_acked);
	seti(x, "batches_failed", st->batches_failed);
	seti(x, "attempts", st->attempts);
	setf(x, "changes_per_s", s->changes_per_s);
	setf(x, "batches_per_s", s->batches_per_s);

	x = sub(j, "latency_ms");
	setf(x, "p50", s->p50);
	setf(x, "p95", s->p95);
	setf(x, "p99", s->p99);
	setf(x, "max", s->max);
	setf(x, "mean", s->mean);
	seti(x, "samples", st->n_lat);
	setf(x, "first_second_max", s->first_s_max);
	setf(x, "steady_p50", s->steady_p50);
	setf(x, "steady_p99", s->steady_p99);
	seti(x, "steady_samples", s->n_steady);

	x = sub(j, "wire");
	setf(x, "request_bytes_per_change", s->req_per_change);
	setf(x, "response_bytes_per_change", s->resp_per_change);
	setf(x, "bytes_per_change", s->req_per_change + s->resp_per_change);
	seti(x, "request_bytes", st->push_sent_bytes);
	seti(x, "response_bytes", st->push_recv_bytes);

	x = counters_json(&st->errors);
	json_object_set_new(x, "rejected", counters_json(&st->rejections));
	json_object_set_new(j, "errors", x);

	x = sub(j, "pull");
	setf(x, "seconds", s->pull_s);
	seti(x, "changes", st->pulled);
	seti(x, "requests", st->pull_requests);
	setf(x, "changes_per_s", s->pull_s > 0 ? (double)st->pulled / s->pull_s : 0);
	seti(x, "request_bytes", st->pull_sent_bytes);
	seti(x, "response_bytes", st->pull_recv_bytes);

	if (o->server_pid > 0) {
		x = sub(j, "server");
		seti(x, "pid", (uint64_t)o->server_pid);
		if (st->rss_known) {
			seti(x, "rss_max_kb", st->rss_max_kb);
			seti(x, "rss_final_kb", st->rss_final_kb);
			seti(x, "rss_anon_max_kb", st->anon_max_kb);
			seti(x, "rss_anon_final_kb", st->anon_final_kb);
			seti(x, "rss_mapped_max_kb", st->mapped_max_kb);
		}
		if (st->server_cpu_s >= 0)
			setf(x, "push_cpu_s", st->server_cpu_s);
	}
	if (st->writer_known) {
		const double *a = st->writer0, *b = st->writer1;
		x = sub(j, "writer");
		setf(x, "commits", b[LG_COMMITS] - a[LG_COMMITS]);
		setf(x, "jobs", b[LG_JOBS] - a[LG_JOBS]);
		setf(x, "commit_s", b[LG_COMMIT_S] - a[LG_COMMIT_S]);
		setf(x, "commit_cpu_s", b[LG_COMMIT_CPU_S] - a[LG_COMMIT_CPU_S]);
		setf(x, "apply_cpu_s", b[LG_APPLY_CPU_S] - a[LG_APPLY_CPU_S]);
		setf(x, "window_holds", b[LG_WINDOW_HOLDS] - a[LG_WINDOW_HOLDS]);
	}
	setf(sub(j, "loadgen"), "push_cpu_s", st->self_cpu_s);
	/* A virtual machine's neighbours: when the hypervisor takes the CPUs
	 * (steal time), latency and rates suffer through no fault of ours;
	 * said so that a noisy run can be told apart. */
	if (st->steal_s >= 0) {
		x = sub(j, "machine");
		setf(x, "steal_s", st->steal_s);
		double cores = (double)sysconf(_SC_NPROCESSORS_ONLN);
		setf(x, "steal_share", s->push_s > 0 ? st->steal_s / (s->push_s * cores) : 0);
	}

	if (run->v.ran) {
		x = sub(j, "verify");
		json_object_set_new(x, "ok", json_boolean(run->v.ok));
		json_object_set_new(x, "error", json_string(run->v.ok ? "" : run->v.why));
		seti(x, "changes", run->v.changes);
		seti(x, "records", run->v.records);
		seti(x, "conflicted_records", run->v.conflicted);
		seti(x, "expected_conflicted_records", run->v.expected_conflicted);
		seti(x, "log_entries_added", run->v.log_after - run->v.log_before);
	} else {
		json_object_set_new(j, "verify", json_null());
	}
	char *txt = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
	if (txt)
		puts(txt);
	free(txt);
	json_decref(j);
}

static void print_counters(const char *label, const struct lg_counters *c)
{
	printf("  %-10s ", label);
	if (!c->n)
		printf("none");
	for (size_t i = 0; i < c->n; i++)
		printf("%s%s %" PRIu64, i ? ", " : "", c->v[i].key, c->v[i].n);
	printf("\n");
}

static void print_table(struct lg_run *run, const struct summary *s)
{
	const struct lg_opts *o = &run->o;
	const struct lg_stats *st = &run->st;
	double n = s->total ? (double)s->total : 1;
	printf("shahidi-loadgen: %u devices x %" PRIu64 " changes, batches of %u, seed %" PRIu64
	       ", %s",
	       run->n_dev, o->changes, o->batch, o->seed, o->server);
	if (o->rate > 0)
		printf(", offered %.0f changes/s", o->rate);
	printf("\n");
	printf("workload     %" PRIu64 " changes in %" PRIu64 " batches: %.0f B/change protobuf, "
	       "%.0f B deflated (made in %.1f s)\n",
	       s->total, run->total_batches, (double)st->raw_bytes / n,
	       (double)st->body_bytes / n, (double)st->gen_ns / 1e9);
	printf("push         %.2f s: %.0f changes/s, %.1f batches/s\n", s->push_s, s->changes_per_s,
	       s->batches_per_s);
	printf("  acked      %" PRIu64 " (applied %" PRIu64 ", duplicate %" PRIu64
	       "); rejected %" PRIu64 ", in doubt %" PRIu64 ", refused %" PRIu64
	       ", unsent %" PRIu64 "\n",
	       s->acked, s->applied, s->duplicate, s->rejected, s->in_doubt, s->failed, s->unsent);
	printf("  latency    p50 %.2f ms, p95 %.2f, p99 %.2f, max %.2f (mean %.2f; per batch "
	       "round trip, %zu batches)\n",
	       s->p50, s->p95, s->p99, s->max, s->mean, st->n_lat);
	printf("  after 1 s  p50 %.2f ms, p99 %.2f (%zu batches); first second's max %.2f ms\n",
	       s->steady_p50, s->steady_p99, s->n_steady, s->first_s_max);
	printf("  wire       %.1f B/change sent, %.1f received, %.1f together (headers "
	       "included)\n",
	       s->req_per_change, s->resp_per_change, s->req_per_change + s->resp_per_change);
	print_counters("errors", &st->errors);
	print_counters("rejected", &st->rejections);
	printf("pull         %.2f s: %" PRIu64 " changes in %" PRIu64
	       " requests (%.0f changes/s)\n",
	       s->pull_s, st->pulled, st->pull_requests,
	       s->pull_s > 0 ? (double)st->pulled / s->pull_s : 0);
	if (o->server_pid > 0) {
		if (st->rss_known)
			printf("server       RSS max %.1f MiB, final %.1f MiB (anonymous: max "
			       "%.1f, final %.1f; the rest is the store's map)",
			       (double)st->rss_max_kb / 1024, (double)st->rss_final_kb / 1024,
			       (double)st->anon_max_kb / 1024, (double)st->anon_final_kb / 1024);
		else
			printf("server       RSS unknown (pid %d)", o->server_pid);
		if (st->server_cpu_s >= 0 && s->push_s > 0)
			printf("; CPU %.1f s during the push (%.0f%% of one core)",
			       st->server_cpu_s, 100 * st->server_cpu_s / s->push_s);
		printf("\n");
	}
	if (st->writer_known) {
		const double *a = st->writer0, *b = st->writer1;
		double commits = b[LG_COMMITS] - a[LG_COMMITS];
		printf("writer       %.0f commits during the push, %.1f batches each, %.2f s in "
		       "commits (%.2f s of CPU, %.2f applying)\n",
		       commits, commits > 0 ? (b[LG_JOBS] - a[LG_JOBS]) / commits : 0,
		       b[LG_COMMIT_S] - a[LG_COMMIT_S], b[LG_COMMIT_CPU_S] - a[LG_COMMIT_CPU_S],
		       b[LG_APPLY_CPU_S] - a[LG_APPLY_CPU_S]);
	} else if (o->metrics_token) {
		printf("writer       counters unreadable (SHAHIDI_METRICS_TOKEN set)\n");
	}
	printf("loadgen      CPU %.2f s during the push\n", st->self_cpu_s);
	if (st->steal_s >= 0)
		printf("machine      steal %.2f s during the push (taken by the hypervisor, all cores)\n",
		       st->steal_s);
	if (run->v.ran && run->v.ok)
		printf("verify: ok (%" PRIu64 " changes, %" PRIu64 " records, %" PRIu64
		       " conflicted records)\n",
		       run->v.changes, run->v.records, run->v.conflicted);
}

int main(int argc, char **argv)
{
	struct lg_run run = {
		.o = {
			.server = DEFAULT_SERVER,
			.devices = 8,
			.batch = 100,
			.changes = 1000,
			.seconds = 60,
			.seed = 1,
			.shared = 8,
			.timeout_ms = 30000,
			.retries = 8,
			.level = 6,
		},
	};
	char err[256];
	int rc = parse_args(argc, argv, &run.o), r;
	if (rc >= 0)
		return rc;
	rc = EXIT_FAIL;
	run.o.metrics_token = getenv("SHAHIDI_METRICS_TOKEN");
	if (run.o.metrics_token && !*run.o.metrics_token)
		run.o.metrics_token = NULL;
	signal(SIGPIPE, SIG_IGN);
	if ((r = parse_server(&run, run.o.server)) < 0) {
		fprintf(stderr, "shahidi-loadgen: --server %s: %s\n", run.o.server,
			r == -EPROTONOSUPPORT ? "only http://HOST[:PORT] is supported"
			: r == -EHOSTUNREACH  ? "cannot resolve the host"
					      : "expected http://HOST[:PORT]");
		return EXIT_USAGE;
	}
	run.n_dev = run.o.devices;
	raise_fd_limit(run.n_dev);
	if (!(run.dev = calloc(run.n_dev, sizeof(*run.dev))))
		goto out;
	if (form_registry_new(&run.forms) < 0 ||
	    form_registry_add_builtin(run.forms, err, sizeof(err)) < 0 ||
	    !(run.form = form_registry_find(run.forms, "incident_report", run.o.groups ? 3 : 1))) {
		fprintf(stderr, "shahidi-loadgen: cannot load the incident report form\n");
		goto out;
	}
	if (run.o.tokens && read_tokens(&run, run.o.tokens) < 0)
		goto out;
	if (run.o.data && prepare_store(&run) < 0)
		goto out;
	/* Fresh devices count from 1, as phones do. Given devices may have
	 * pushed before: start at the clock in microseconds, beyond any number
	 * an earlier run of this tool used (a run takes longer than its count
	 * of microseconds), so that nothing is taken for a resend. */
	uint64_t first = run.o.tokens ? sh_now_ms() * 1000 : 1;
	for (unsigned i = 0; i < run.n_dev; i++) {
		run.dev[i].run = &run;
		run.dev[i].idx = i;
		run.dev[i].first_change_id = first;
		run.dev[i].first_batch_seq = first;
	}
	if (!run.o.json)
		fprintf(stderr, "shahidi-loadgen: making %" PRIu64 " changes...\n",
			(uint64_t)run.n_dev * run.o.changes);
	if ((r = lg_work_make(&run)) < 0) {
		fprintf(stderr, "shahidi-loadgen: cannot make the workload: %s\n", sh_strerror(r));
		goto out;
	}
	if ((r = lg_net_run(&run)) < 0) {
		fprintf(stderr, "shahidi-loadgen: %s\n", sh_strerror(r));
		goto out;
	}
	struct summary s;
	summarise(&run, &s);
	if (run.o.verify && lg_verify_store(&run, run.o.data) < 0)
		run.v.ok = false;
	if (run.o.json)
		print_json(&run, &s);
	else
		print_table(&run, &s);
	rc = 0;
	if (run.v.ran && !run.v.ok) {
		fprintf(stderr, "VERIFY FAILED: %s\n", run.v.why);
		rc = EXIT_FAIL;
	}
	if (s.acked == 0) {
		fprintf(stderr, "shahidi-loadgen: the server acknowledged no change\n");
		rc = EXIT_FAIL;
	}
out:
	lg_work_free(&run);
	free(run.dev);
	free(run.st.lat_us);
	free(run.st.lat_at_ms);
	lg_counters_free(&run.st.errors);
	lg_counters_free(&run.st.rejections);
	form_registry_free(run.forms);
	return rc;
}
