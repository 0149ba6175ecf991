/* metrics: GET /metrics, the Prometheus text format. The counters are
 * copied on the loop; the store's figures and the process's (from /proc)
 * are read on the thread pool, so a scrape never touches the disk on the
 * event loop. */
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "arena.h"
#include "buf.h"
#include "common.h"
#include "http.h"
#include "routes.h"
#include "scope.h"
#include "server.h"
#include "store.h"
#include "task.h"

/* The process metrics every Prometheus client library exports, from
 * /proc (Linux). A figure that cannot be read is left out. */
static void metrics__process(struct buf *b)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		buf_printf(b,
			   "# HELP process_cpu_seconds_total User and system CPU time spent.\n"
			   "# TYPE process_cpu_seconds_total counter\n"
			   "process_cpu_seconds_total %.6f\n",
			   (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
				   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
	unsigned long long vsize = 0, rss = 0, start = 0, btime = 0;
	/* RSS in its two parts: what the server itself holds, and the store's
	 * pages mapped in (the kernel's page cache, shared and reclaimable).
	 * Read once: RSS from the same read, so that the parts add up to it
	 * (a second read a moment later differs by whatever the writer and
	 * this very scrape allocated in between). */
	uint64_t own, mapped;
	bool parts = store_process_memory(&own, &mapped) == 0;
	char line[1024];
	FILE *f = fopen("/proc/self/stat", "r");
	if (f) {
		/* after the command name, which may hold spaces and parentheses */
		char *p = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d"
				" %*d %*d %llu %llu %llu", &start, &vsize, &rss) == 3)
			buf_printf(b,
				   "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
				   "# TYPE process_resident_memory_bytes gauge\n"
				   "process_resident_memory_bytes %llu\n"
				   "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
				   "# TYPE process_virtual_memory_bytes gauge\n"
				   "process_virtual_memory_bytes %llu\n",
				   parts ? (unsigned long long)(own + mapped)
					 : rss * (unsigned long long)page,
				   vsize);
		else
			start = 0;
		fclose(f);
	}
	if (start && ticks > 0 && (f = fopen("/proc/stat", "r"))) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "btime %llu", &btime) == 1)
				break;
		fclose(f);
		if (btime)
			buf_printf(b,
				   "# HELP process_start_time_seconds Start time of the process since the epoch.\n"
				   "# TYPE process_start_time_seconds gauge\n"
				   "process_start_time_seconds %.2f\n",
				   (double)btime + (double)start / (double)ticks);
	}
	if (parts)
		buf_printf(b,
			   "# HELP shahidi_memory_own_bytes Resident memory the server holds itself "
			   "(heap, stacks, LMDB's dirty pages).\n"
			   "# TYPE shahidi_memory_own_bytes gauge\n"
			   "shahidi_memory_own_bytes %llu\n"
			   "# HELP shahidi_memory_mapped_bytes Resident file pages mapped in (the "
			   "store's pages: page cache, reclaimable).\n"
			   "# TYPE shahidi_memory_mapped_bytes gauge\n"
			   "shahidi_memory_mapped_bytes %llu\n",
			   (unsigned long long)own, (unsigned long long)mapped);
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		unsigned n = 0;
		const struct dirent *e;
		while ((e = readdir(d)))
			n += e->d_name[0] != '.';
		closedir(d);
		buf_printf(b,
			   "# HELP process_open_fds Number of open file descriptors.\n"
			   "# TYPE process_open_fds gauge\n"
			   "process_open_fds %u\n",
			   n - 1); /* the directory's own */
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		buf_printf(b,
			   "# HELP process_max_fds Maximum number of open file descriptors.\n"
			   "# TYPE process_max_fds gauge\n"
			   "process_max_fds %llu\n",
			   (unsigned long long)rl.rlim_cur);
}

/* The request-latency histogram, its route ids summed into the fixed
 * groups of routes_group(). */
static void metrics__latency(struct buf *b, const struct server_stats *st)
{
	uint64_t h[RG__COUNT][SERVER_LATENCY_BOUNDS + 1] = {{0}}, sum_ns[RG__COUNT] = {0};
	for (int r = 0; r < R__COUNT; r++) {
		enum route_group g = routes_group(r);
		for (int k = 0; k <= SERVER_LATENCY_BOUNDS; k++)
			h[g][k] += st->latency[r][k];
		sum_ns[g] += st->latency_sum_ns[r];
	}
	buf_puts(b, "# HELP shahidi_http_request_duration_seconds Time from a request's first byte "
		    "parsed to its answer's last byte handed to the socket, by group of routes.\n"
		    "# TYPE shahidi_http_request_duration_seconds histogram\n");
	for (int g = 0; g < RG__COUNT; g++) {
		uint64_t cum = 0;
		const char *name = routes_group_name((enum route_group)g);
		for (int k = 0; k <= SERVER_LATENCY_BOUNDS; k++)
			cum += h[g][k];
		if (!cum)
			continue; /* a route nobody called yet */
		cum = 0;
		for (int k = 0; k <= SERVER_LATENCY_BOUNDS; k++) {
			char le[16] = "+Inf";
			cum += h[g][k];
			if (k < SERVER_LATENCY_BOUNDS)
				snprintf(le, sizeof(le), "%g", server_latency_us[k] / 1e6);
			buf_printf(b, "shahidi_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %" PRIu64 "\n",
				   name, le, cum);
		}
		buf_printf(b,
			   "shahidi_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
			   "shahidi_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
			   name, (double)sum_ns[g] / 1e9, name, cum);
	}
}

/* Per county with phones in service: how many, and the newest push of
 * any of its phones (revoked ones too: their pushes were received), 0
 * when none ever pushed. An alert on time() minus it finds a county gone
 * quiet. Phones only: coordinators' and admins' tokens do not push. */
static void metrics__counties(struct buf *b, struct store_txn *t)
{
	struct {
		uint32_t phones;
		uint64_t last_push_ms;
	} c[SCOPE_COUNTIES + 1] = {{0}};
	struct arena *a = arena_new();
	uint64_t id = 0;
	store_device_t *d;
	if (!a)
		return;
	while (store_device_next(t, a, &id, &d) == 1) {
		int n = d->role == ROLE_DEVICE ? scope_county_number(d->county) : -1;
		if (n > 0) {
			c[n].phones += !d->revoked;
			c[n].last_push_ms = SH_MAX(c[n].last_push_ms, d->last_push_ms);
		}
		arena_reset(a);
	}
	arena_free(a);
	buf_puts(b, "# HELP shahidi_county_phones Phones in service (enrolled, not revoked) per county.\n"
		    "# TYPE shahidi_county_phones gauge\n");
	for (int n = 1; n <= SCOPE_COUNTIES; n++)
		if (c[n].phones)
			buf_printf(b, "shahidi_county_phones{county=\"%03d\"} %" PRIu32 "\n", n,
				   c[n].phones);
	buf_puts(b, "# HELP shahidi_county_last_push_timestamp_seconds Newest push from any phone "
		    "of the county, since the epoch (0: none yet); counties with phones in service.\n"
		    "# TYPE shahidi_county_last_push_timestamp_seconds gauge\n");
	for (int n = 1; n <= SCOPE_COUNTIES; n++)
		if (c[n].phones)
			buf_printf(b, "shahidi_county_last_push_timestamp_seconds{county=\"%03d\"} %.3f\n",
				   n, (double)c[n].last_push_ms / 1e3);
}

/* A scrape: the loop's counters copied on the loop, the rest (the
 * store, /proc) read and the text written on the thread pool. */
struct metrics_job {
	struct task task;
	struct server_stats st;
	struct writer_stats ws;
	unsigned conns;
	struct buf b;
};

static void metrics_gather(struct task *tk)
{
	struct metrics_job *m = (struct metrics_job *)tk;
	struct buf *bp = &m->b;
	struct store_info info = {0};
	struct store_txn *t;
	struct buf counties = {0};
	if (store_begin(tk->srv->store, false, &t) == 0) {
		store_info(t, &info);
		metrics__counties(&counties, t);
		store_abort(t);
	}
	const struct server_stats *st = &m->st;
	const struct writer_stats ws = m->ws;
	buf_puts(bp, "# HELP shahidi_requests_total HTTP requests by route and status class.\n"
		     "# TYPE shahidi_requests_total counter\n");
	static const char *const cls[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
	for (int r = 0; r < R__COUNT; r++)
		for (int k = 0; k < 6; k++)
			if (st->requests[r][k])
				buf_printf(bp, "shahidi_requests_total{route=\"%s\",status=\"%s\"} %" PRIu64 "\n",
					   routes_name(r), cls[k], st->requests[r][k]);
	buf_printf(bp,
		   "# HELP shahidi_batches_total Push batches answered, replays included.\n"
		   "# TYPE shahidi_batches_total counter\n"
		   "shahidi_batches_total %" PRIu64 "\n"
		   "# HELP shahidi_batches_replayed_total Push batches sent again, answered from the store.\n"
		   "# TYPE shahidi_batches_replayed_total counter\n"
		   "shahidi_batches_replayed_total %" PRIu64 "\n"
		   "# HELP shahidi_changes_total Changes by outcome.\n"
		   "# TYPE shahidi_changes_total counter\n"
		   "shahidi_changes_total{outcome=\"applied\"} %" PRIu64 "\n"
		   "shahidi_changes_total{outcome=\"duplicate\"} %" PRIu64 "\n"
		   "shahidi_changes_total{outcome=\"rejected\"} %" PRIu64 "\n"
		   "# HELP shahidi_open_conflicts Records with open conflicts.\n"
		   "# TYPE shahidi_open_conflicts gauge\n"
		   "shahidi_open_conflicts %" PRIu64 "\n"
		   "# HELP shahidi_records Records in the store, deleted ones included.\n"
		   "# TYPE shahidi_records gauge\n"
		   "shahidi_records %" PRIu64 "\n"
		   "# HELP shahidi_log_entries Entries in the change log.\n"
		   "# TYPE shahidi_log_entries gauge\n"
		   "shahidi_log_entries %" PRIu64 "\n"
		   "# HELP shahidi_connections_open Open client connections.\n"
		   "# TYPE shahidi_connections_open gauge\n"
		   "shahidi_connections_open %u\n"
		   "# HELP shahidi_connections_refused_total Connections refused over --max-conns.\n"
		   "# TYPE shahidi_connections_refused_total counter\n"
		   "shahidi_connections_refused_total %" PRIu64 "\n"
		   "# HELP shahidi_reads_paused_total Requests left unread while overloaded.\n"
		   "# TYPE shahidi_reads_paused_total counter\n"
		   "shahidi_reads_paused_total %" PRIu64 "\n"
		   "# HELP shahidi_auth_failures_total Requests refused for a missing or wrong token.\n"
		   "# TYPE shahidi_auth_failures_total counter\n"
		   "shahidi_auth_failures_total %" PRIu64 "\n"
		   "# HELP shahidi_auth_throttled_total Requests refused with 429 after too many bad tokens.\n"
		   "# TYPE shahidi_auth_throttled_total counter\n"
		   "shahidi_auth_throttled_total %" PRIu64 "\n"
		   "# HELP shahidi_upload_read_iteration_max_bytes Most upload body bytes the "
		   "event loop read in one iteration since start.\n"
		   "# TYPE shahidi_upload_read_iteration_max_bytes gauge\n"
		   "shahidi_upload_read_iteration_max_bytes %" PRIu64 "\n"
		   "# HELP shahidi_upload_reads_deferred_total Upload reads put off to a later "
		   "iteration of the event loop, so that other requests go first: the "
		   "iteration's budget spent, the upload's turn in the round taken, other "
		   "requests being answered.\n"
		   "# TYPE shahidi_upload_reads_deferred_total counter\n"
		   "shahidi_upload_reads_deferred_total{reason=\"budget\"} %" PRIu64 "\n"
		   "shahidi_upload_reads_deferred_total{reason=\"round\"} %" PRIu64 "\n"
		   "shahidi_upload_reads_deferred_total{reason=\"others\"} %" PRIu64 "\n"
		   "# HELP shahidi_map_size_bytes Size of the store's memory map (grows up to --max-map).\n"
		   "# TYPE shahidi_map_size_bytes gauge\n"
		   "shahidi_map_size_bytes %" PRIu64 "\n"
		   "# HELP shahidi_map_used_bytes Bytes of the store's map in use.\n"
		   "# TYPE shahidi_map_used_bytes gauge\n"
		   "shahidi_map_used_bytes %" PRIu64 "\n"
		   "# HELP shahidi_writer_queue Batches waiting for the writer.\n"
		   "# TYPE shahidi_writer_queue gauge\n"
		   "shahidi_writer_queue %" PRIu64 "\n",
		   st->batches, st->batches_replayed, st->changes_applied, st->changes_duplicate,
		   st->changes_rejected, info.open_conflicts, info.records, info.log_entries,
		   m->conns, st->conns_refused, st->reads_paused, st->auth_failures, st->auth_throttled,
		   st->upload_read_iter_max, st->upload_deferred_budget, st->upload_deferred_round,
		   st->upload_deferred_others, info.map_size, info.map_used,
		   ws.queued);
	static const char *const le[] = {"0.001", "0.002", "0.005", "0.01", "0.02", "0.05",
					 "0.1",	  "0.2",   "0.5",   "1",    "+Inf"};
	buf_puts(bp, "# HELP shahidi_commit_seconds Durable commit latency (group commits).\n"
		     "# TYPE shahidi_commit_seconds histogram\n");
	uint64_t cum = 0;
	for (int i = 0; i < 11; i++) {
		cum += ws.latency_buckets[i];
		buf_printf(bp, "shahidi_commit_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", le[i], cum);
	}
	buf_printf(bp,
		   "shahidi_commit_seconds_sum %.6f\nshahidi_commit_seconds_count %" PRIu64 "\n"
		   "# HELP shahidi_commit_apply_seconds_total Of the commits' time, applying the "
		   "batches (the rest is writing and syncing the pages).\n"
		   "# TYPE shahidi_commit_apply_seconds_total counter\n"
		   "shahidi_commit_apply_seconds_total %.6f\n"
		   "# HELP shahidi_commit_apply_cpu_seconds_total The writer thread's CPU time "
		   "applying the batches (the rest of shahidi_commit_cpu_seconds_total is writing "
		   "and syncing the pages).\n"
		   "# TYPE shahidi_commit_apply_cpu_seconds_total counter\n"
		   "shahidi_commit_apply_cpu_seconds_total %.6f\n"
		   "# HELP shahidi_group_commit_jobs Jobs per group commit.\n"
		   "# TYPE shahidi_group_commit_jobs summary\n"
		   "shahidi_group_commit_jobs_sum %" PRIu64 "\nshahidi_group_commit_jobs_count %" PRIu64 "\n"
		   "# HELP shahidi_group_commit_jobs_max Most jobs in one group commit since start.\n"
		   "# TYPE shahidi_group_commit_jobs_max gauge\n"
		   "shahidi_group_commit_jobs_max %" PRIu64 "\n"
		   "# HELP shahidi_commit_cpu_seconds_total The writer thread's CPU time in commits "
		   "(applying, writing the pages, syncing them).\n"
		   "# TYPE shahidi_commit_cpu_seconds_total counter\n"
		   "shahidi_commit_cpu_seconds_total %.6f\n"
		   "# HELP shahidi_commit_window_holds_total Commits that waited for more batches "
		   "(--commit-window-ms).\n"
		   "# TYPE shahidi_commit_window_holds_total counter\n"
		   "shahidi_commit_window_holds_total %" PRIu64 "\n"
		   "# HELP shahidi_commit_window_held_seconds_total Time commits waited for more "
		   "batches, in all.\n"
		   "# TYPE shahidi_commit_window_held_seconds_total counter\n"
		   "shahidi_commit_window_held_seconds_total %.6f\n"
		   "# HELP shahidi_build_info The running server's version.\n"
		   "# TYPE shahidi_build_info gauge\n"
		   "shahidi_build_info{version=\"%s\"} 1\n",
		   ws.latency_sum_s, ws.commits, ws.apply_sum_s, ws.apply_cpu_s, ws.group_sum, ws.commits,
		   ws.max_group, ws.commit_cpu_s, ws.window_holds, ws.window_held_s, SHAHIDI_VERSION);
	metrics__latency(bp, st);
	buf_append(bp, counties.data, counties.len);
	buf_free(&counties);
	metrics__process(bp);
}

static void metrics_done(struct task *t)
{
	struct metrics_job *m = (struct metrics_job *)t;
	http_respond(t->c, 200, "text/plain; version=0.0.4", m->b.data, m->b.len);
	buf_free(&m->b);
	task_release(t);
	free(m);
}

void metrics_serve(struct http_conn *c, struct server *srv, struct http_request *req)
{
	struct metrics_job *m = calloc(1, sizeof(*m));
	(void)req;
	if (!m) {
		http_error(c, 503, "busy", "out of memory");
		return;
	}
	m->st = srv->stats;
	m->conns = http_conns(srv);
	writer_get_stats(srv->writer, &m->ws);
	task_hold(&m->task, c, false);
	if (task_queue(&m->task, metrics_gather, metrics_done) < 0) {
		http_error(c, 503, "busy", "cannot queue the scrape");
		task_release(&m->task);
		free(m);
	}
}
