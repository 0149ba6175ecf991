/* writer: the one thread that writes to the store, in group commits.
 *
 * Jobs are queued from the event loop. The writer takes every job waiting
 * when a commit starts, applies them all in one LMDB transaction (one
 * fsync), commits, and only then hands the jobs back to the loop (through
 * a uv_async_t) so that their acknowledgements are sent. An acknowledged
 * push is therefore on disk.
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
	struct writer_job *next;    /* private */
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
	double apply_sum_s;         /* of that, applying the jobs (CPU); the rest
				       is writing the pages and syncing them */
	uint64_t group_sum;
};

/* Starts the writer thread. loop: where done() callbacks run. */
int writer_start(uv_loop_t *loop, struct store *s, struct writer **ret);
/* Queues a job (loop thread). */
void writer_submit(struct writer *w, struct writer_job *job);
/* Jobs queued and not yet committed. */
uint64_t writer_backlog(struct writer *w);
void writer_get_stats(struct writer *w, struct writer_stats *ret);
/* Finishes the queued jobs, stops the thread, closes the async handle.
 * The loop must run afterwards for the last done() calls and the close. */
void writer_stop(struct writer *w);
/* Frees the writer after the loop has run dry. NULL is a no-op. */
void writer_free(struct writer *w);

#endif
