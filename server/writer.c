#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "store.h"
#include "sync.h"

/* Batches per transaction: enough to amortise the fsync, few enough that
 * one commit does not hold the first batch's acknowledgement too long. */
#define WRITER_MAX_GROUP 64

struct writer {
	uv_loop_t *loop;
	struct store *store;
	uv_async_t async;
	uv_thread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct writer_job *queue, *queue_tail; /* waiting */
	struct writer_job *done, *done_tail;   /* committed, for the loop */
	uint64_t backlog;
	bool stopping;
	bool started;
	uint64_t window_ns;     /* the commit window; 0: off */
	uint64_t expected;      /* pushes being decoded (writer_expect) */
	/* The last two devices that pushed, and when (queued): another
	 * phone pushing lately says more batches are likely soon. */
	uint64_t seen_dev[2], seen_ns[2];
	struct writer_stats stats;
};

struct group {
	struct writer_job **jobs;
	size_t n;
	uint64_t apply_ns;      /* of the commit: the rest is write and sync */
	uint64_t apply_cpu_ns;  /* this thread's CPU in apply_ns */
};

static int apply_group_jobs(struct store_txn *t, struct group *g);
static uint64_t thread_cpu_ns(void);

static int apply_group(struct store_txn *t, void *ud)
{
	struct group *g = ud;
	uint64_t t0 = sh_mono_ns(), cpu0 = thread_cpu_ns();
	int r = apply_group_jobs(t, g);
	g->apply_ns += sh_mono_ns() - t0;
	g->apply_cpu_ns += thread_cpu_ns() - cpu0;
	return r;
}

static int apply_group_jobs(struct store_txn *t, struct group *g)
{
	for (size_t i = 0; i < g->n; i++) {
		struct writer_job *j = g->jobs[i];
		int r = 0;
		switch (j->kind) {
		case WJOB_PUSH:
			r = sync_apply(t, j->batch, j->now_ms, &j->res);
			/* These refuse the batch before it writes anything: the
			 * others in the group go on. */
			if (r == -EEXIST || r == -ENOENT) {
				j->result = r;
				r = 0;
			} else {
				j->result = r;
			}
			break;
		case WJOB_NOTE_PULL:
			r = sync_note_pull(t, j->device, j->cursor, j->now_ms);
			j->result = r == -ENOENT ? 0 : r; /* device gone: nothing to note */
			r = j->result;
			break;
		case WJOB_CALL:
			r = j->result = j->fn(t, j->fn_ud);
			break;
		}
		if (r < 0)
			return r; /* the transaction is spoilt: abort it all */
	}
	return 0;
}

static void record_latency(struct writer *w, uint64_t ns, size_t n)
{
	static const double bounds_ms[10] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
	double ms = (double)ns / 1e6;
	int b = 0;
	while (b < 10 && ms > bounds_ms[b])
		b++;
	w->stats.latency_buckets[b]++;
	w->stats.latency_sum_s += ms / 1000.0;
	w->stats.commits++;
	w->stats.jobs += n;
	w->stats.group_sum += n;
	if (n > w->stats.max_group)
		w->stats.max_group = n;
}

/* How often the writer asks whether to let go of the store's mapped
 * pages (store_release_if_needed: only above a high mark of mapped memory,
 * or when the machine runs short). Those pages are the kernel's page
 * cache, shared and reclaimable: letting go of them every 200 ms, to keep
 * RSS low, made every commit fault the same pages in again (on this kernel
 * a fault maps a whole large folio, up to hundreds of entries): ~8% of the
 * writer's time under 64 phones, more in the kernel's page-table work.
 * The server's own memory is what counts, and /metrics and tools/bench
 * report it apart from the mapped pages. */
#define RELEASE_CHECK_NS 100000000ull

/* This thread's CPU time (user and system), in ns: what a commit costs
 * the machine, apart from the time it waits for the disk. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether more batches are likely within the window, for a group of n
 * jobs taken that holds a push (lock held): pushes are being decoded, or
 * a phone other than those in the group pushed within the window. A lone
 * phone sends its next batch only once this one is acknowledged: for it,
 * neither holds. */
static bool more_likely(const struct writer *w, struct writer_job **g, size_t n, uint64_t now)
{
	bool pushes = false; /* others (a token reload, a pull's note) never wait */
	for (size_t i = 0; i < n && !pushes; i++)
		pushes = g[i]->kind == WJOB_PUSH;
	if (!pushes)
		return false;
	if (w->expected > 0)
		return true;
	for (int k = 0; k < 2; k++) {
		if (!w->seen_ns[k] || now - w->seen_ns[k] > w->window_ns)
			continue;
		bool in_group = false;
		for (size_t i = 0; i < n && !in_group; i++)
			in_group = g[i]->kind == WJOB_PUSH &&
				   sync_batch_device(g[i]->batch) == w->seen_dev[k];
		if (!in_group)
			return true;
	}
	return false;
}

/* Takes queued jobs into g (lock held) until it holds WRITER_MAX_GROUP. */
static size_t take_queued(struct writer *w, struct writer_job **g, size_t n)
{
	while (w->queue && n < WRITER_MAX_GROUP) {
		g[n++] = w->queue;
		w->queue = w->queue->next;
	}
	if (!w->queue)
		w->queue_tail = NULL;
	return n;
}

/* The commit window (lock held): when more batches are likely, waits
 * for them until the group is full or its oldest job has waited the
 * window since it was queued (not until the likely ones came: at half
 * the saturated rate that gave groups of two, where the whole window
 * gives three or four). Returns the group's new size. The bound is
 * on the oldest job, so no batch waits more than the window for its
 * commit to start (beyond the commit before it). */
static size_t hold_window(struct writer *w, struct writer_job **g, size_t n)
{
	uint64_t start = sh_mono_ns(), deadline = g[0]->queued_ns + w->window_ns;
	if (!w->window_ns || n >= WRITER_MAX_GROUP || start >= deadline ||
	    !more_likely(w, g, n, start))
		return n;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	uint64_t left = deadline - start;
	until.tv_sec += (time_t)(left / 1000000000u);
	until.tv_nsec += (long)(left % 1000000000u);
	until.tv_sec += until.tv_nsec / 1000000000;
	until.tv_nsec %= 1000000000;
	while (!w->stopping && n < WRITER_MAX_GROUP) {
		if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT)
			break;
		n = take_queued(w, g, n);
	}
	n = take_queued(w, g, n);
	w->stats.window_holds++;
	w->stats.window_held_s += (double)(sh_mono_ns() - start) / 1e9;
	return n;
}

static void writer_main(void *arg)
{
	struct writer *w = arg;
	struct writer_job *batch[WRITER_MAX_GROUP];
	uint64_t last_check = sh_mono_ns();

	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->queue && !w->stopping) {
			/* Readers (pull, export, status) read through the map
			 * too: while no batch comes, check all the same. */
			struct timespec until;
			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_nsec += RELEASE_CHECK_NS;
			until.tv_sec += until.tv_nsec / 1000000000;
			until.tv_nsec %= 1000000000;
			if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT) {
				pthread_mutex_unlock(&w->lock);
				store_release_if_needed(w->store);
				last_check = sh_mono_ns();
				pthread_mutex_lock(&w->lock);
			}
		}
		if (!w->queue && w->stopping)
			break;
		size_t n = take_queued(w, batch, 0);
		n = hold_window(w, batch, n);
		pthread_mutex_unlock(&w->lock);

		uint64_t now = sh_now_ms(), t0 = sh_mono_ns(), cpu0 = thread_cpu_ns();
		for (size_t i = 0; i < n; i++)
			batch[i]->now_ms = now;
		struct group g = {batch, n, 0, 0};
		int r = store_write(w->store, apply_group, &g);
		uint64_t dt = sh_mono_ns() - t0, cpu = thread_cpu_ns() - cpu0;
		for (size_t i = 0; i < n; i++) {
			if (r < 0)
				batch[i]->result = r;
			batch[i]->commit_ns = dt;
		}

		pthread_mutex_lock(&w->lock);
		record_latency(w, dt, n);
		w->stats.apply_sum_s += (double)g.apply_ns / 1e9;
		w->stats.apply_cpu_s += (double)g.apply_cpu_ns / 1e9;
		w->stats.commit_cpu_s += (double)cpu / 1e9;
		for (size_t i = 0; i < n; i++) {
			batch[i]->next = NULL;
			if (w->done_tail)
				w->done_tail->next = batch[i];
			else
				w->done = batch[i];
			w->done_tail = batch[i];
		}
		w->backlog -= n;
		uv_async_send(&w->async);
		pthread_mutex_unlock(&w->lock);

		/* Once the acks are on their way. */
		uint64_t now_ns = sh_mono_ns();
		if (now_ns - last_check > RELEASE_CHECK_NS) {
			store_release_if_needed(w->store);
			last_check = now_ns;
		}
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
}

static void on_async(uv_async_t *h)
{
	struct writer *w = h->data;
	pthread_mutex_lock(&w->lock);
	struct writer_job *j = w->done;
	w->done = w->done_tail = NULL;
	pthread_mutex_unlock(&w->lock);
	while (j) {
		struct writer_job *next = j->next;
		if (j->done)
			j->done(j);
		else
			free(j);
		j = next;
	}
}

int writer_start(uv_loop_t *loop, struct store *s, unsigned window_us, struct writer **ret)
{
	if (window_us > WRITER_MAX_WINDOW_US)
		return -EINVAL;
	struct writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->window_ns = (uint64_t)window_us * 1000;
	w->store = s;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* for the idle release */
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	int r = uv_async_init(loop, &w->async, on_async);
	if (r < 0) {
		free(w);
		return r;
	}
	w->async.data = w;
	if ((r = uv_thread_create(&w->thread, writer_main, w)) < 0) {
		uv_close((uv_handle_t *)&w->async, NULL);
		return r; /* w is freed by writer_free after the close */
	}
	w->started = true;
	*ret = w;
	return 0;
}

void writer_submit(struct writer *w, struct writer_job *job)
{
	job->next = NULL;
	job->queued_ns = sh_mono_ns();
	uint64_t dev = job->kind == WJOB_PUSH ? sync_batch_device(job->batch) : 0;
	pthread_mutex_lock(&w->lock);
	if (job->expected) {
		job->expected = false;
		w->expected--;
	}
	if (job->kind == WJOB_PUSH) {
		if (dev != w->seen_dev[0]) {
			w->seen_dev[1] = w->seen_dev[0];
			w->seen_ns[1] = w->seen_ns[0];
			w->seen_dev[0] = dev;
		}
		w->seen_ns[0] = job->queued_ns;
	}
	if (w->queue_tail)
		w->queue_tail->next = job;
	else
		w->queue = job;
	w->queue_tail = job;
	w->backlog++;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void writer_expect(struct writer *w, int delta)
{
	pthread_mutex_lock(&w->lock);
	w->expected += (uint64_t)(int64_t)delta;
	pthread_mutex_unlock(&w->lock);
}

uint64_t writer_backlog(struct writer *w)
{
	pthread_mutex_lock(&w->lock);
	uint64_t n = w->backlog;
	pthread_mutex_unlock(&w->lock);
	return n;
}

void writer_get_stats(struct writer *w, struct writer_stats *ret)
{
	pthread_mutex_lock(&w->lock);
	*ret = w->stats;
	ret->queued = w->backlog;
	pthread_mutex_unlock(&w->lock);
}

void writer_stop(struct writer *w)
{
	if (!w || !w->started)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	uv_thread_join(&w->thread);
	w->started = false;
	on_async(&w->async); /* hand back what the last commit finished */
	uv_close((uv_handle_t *)&w->async, NULL);
}

void writer_free(struct writer *w)
{
	if (!w)
		return;
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}
