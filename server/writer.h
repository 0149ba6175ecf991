/* writer: the one thread that writes to the store, in group commits.
 *
 * Jobs are queued from the event loop. The writer takes every job waiting
 * when a commit starts, applies them all in one LMDB transaction (one
 * fsync), commits, and only then hands the jobs back to the loop (through
 * a uv_async_t) so that their acknowledgements are sent. An acknowledged
 * push is therefore on disk.
 *
 * The commit window: a commit may wait a little for more batches, when
 * more are likely (pushes being decoded, or other phones pushing within
 * the window), so that several share one commit's page writes and fsync.
 * It is bounded: no batch waits more than the window after it was queued
 * for its commit to start, and a lone phone's push (nothing decoding, no
 * other phone pushing) never waits. 0 turns it off.
 */
#ifndef SHAHIDI_WRITER_H
#define SHAHIDI_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sync.h"

struct store;
struct writer;

enum writer_job_kind {
	WJOB_PUSH,      /* apply a decoded batch */
	WJOB_NOTE_PULL, /* record a device's pull (time, cursor); nobody waits */
	WJOB_CALL,      /* run fn in the transaction (admin actions) */
};

struct writer_job {
	enum writer_job_kind kind;
	struct sync_batch *batch;   /* PUSH: owned by the submitter */
	uint64_t device, cursor;    /* NOTE_PULL */
	int (*fn)(struct store_txn *t, void *ud); /* CALL */
	void *fn_ud;
	uint64_t now_ms;
	/* Results, valid in done(): */
	int result;                 /* 0 or a negative errno */
	struct sync_result res;     /* PUSH: response bytes live in batch */
	uint64_t commit_ns;         /* time its commit took */
	/* Called on the loop thread once the job's commit is durable (or has
	 * failed). May free the job. NULL: the writer frees it. */
	void (*done)(struct writer_job *job);
	void *ud;
	/* Set by the submitter of a push counted with writer_expect(): the
	 * count drops when the job is queued. Cleared by the writer. */
	bool expected;
	struct writer_job *next;    /* private */
	uint64_t queued_ns;         /* private: when it was queued */
};

struct writer_stats {
	uint64_t commits;
	uint64_t jobs;
	uint64_t max_group;
	uint64_t queued;            /* jobs waiting now */
	/* commit latency histogram: buckets <= 1, 2, 5, 10, 20, 50, 100,
	 * 200, 500, 1000 ms, +Inf */
	uint64_t latency_buckets[11];
	double latency_sum_s;
	double apply_sum_s;         /* of that, applying the jobs (wall time:
				       the rest is writing the pages and
				       syncing them) */
	double apply_cpu_s;         /* the writer thread's CPU time applying
				       them: apply_sum_s less the time it
				       waited for a core or a page */
	uint64_t group_sum;
	double commit_cpu_s;        /* the writer thread's CPU time in commits
				       (user + system: applying, writing the
				       pages, syncing them) */
	uint64_t window_holds;      /* commits that waited for more batches */
	double window_held_s;       /* and how long, in all */
};

/* Starts the writer thread. loop: where done() callbacks run.
 * window_us: the commit window (0: off; at most WRITER_MAX_WINDOW_US). */
int writer_start(uv_loop_t *loop, struct store *s, unsigned window_us, struct writer **ret);
/* The longest commit window: a batch acknowledged 100 ms late is still
 * quick for a phone, and longer would only hold connections and memory. */
#define WRITER_MAX_WINDOW_US 100000u
/* Queues a job (loop thread). */
void writer_submit(struct writer *w, struct writer_job *job);
/* delta pushes will be submitted soon (+1: one is being decoded) or no
 * longer will (-1: refused before it reached the writer). A commit waits
 * (within its window) while such pushes are on their way. Loop thread. */
void writer_expect(struct writer *w, int delta);
/* Jobs queued and not yet committed. */
uint64_t writer_backlog(struct writer *w);
void writer_get_stats(struct writer *w, struct writer_stats *ret);
/* Finishes the queued jobs, stops the thread, closes the async handle.
 * The loop must run afterwards for the last done() calls and the close. */
void writer_stop(struct writer *w);
/* Frees the writer after the loop has run dry. NULL is a no-op. */
void writer_free(struct writer *w);

#endif
