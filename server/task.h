/* task: a request answered later, from holding its connection to the
 * answer.
 *
 * Every endpoint that does not answer at once (push, pull, the office's
 * reads, its actions through the writer, exports) goes through here:
 * task_hold keeps the connection allocated and counts the work in
 * struct server (busy; busy_others for all but pushes, which have places
 * of their own in the queue); task_queue runs a step on the thread pool
 * and task_submit one in the writer's transaction, each calling back on
 * the loop; task_release gives everything back and lets paused
 * connections read again. task_status is the one map from a negative
 * errno to an HTTP status.
 *
 * Loop thread only, except the run() step of task_queue (thread pool).
 * A task is embedded in the caller's struct, which owns it.
 */
#ifndef SHAHIDI_TASK_H
#define SHAHIDI_TASK_H

#include <stdbool.h>
#include <uv.h>

#include "writer.h"

struct http_conn;
struct server;

struct task {
	uv_work_t work;
	struct writer_job job;  /* task_submit: the caller fills kind, batch or fn */
	struct http_conn *c;    /* referenced from task_hold to task_release */
	struct server *srv;
	bool push;              /* counted as a push (else as another request) */
	void (*run)(struct task *t);  /* task_queue: on the thread pool */
	void (*done)(struct task *t); /* on the loop, once run or committed */
};

/* Holds c (it stays allocated) and counts the task busy. */
void task_hold(struct task *t, struct http_conn *c, bool push);
/* Runs run(t) on the thread pool, then done(t) on the loop. A negative
 * libuv error when it cannot be queued (nothing is called then). */
int task_queue(struct task *t, void (*run)(struct task *t), void (*done)(struct task *t));
/* Queues t->job for the writer; done(t) runs on the loop once its commit
 * is durable or has failed (t->job.result). */
void task_submit(struct task *t, void (*done)(struct task *t));
/* Lets go of the connection and the count; resumes paused reading. The
 * caller frees what embeds t afterwards. */
void task_release(struct task *t);

/* The HTTP status for a negative errno: -ENOSPC 507 (the store is full),
 * -EMSGSIZE 413, -ENOMEM and -EAGAIN 503, -EEXIST 409; any other, dflt. */
int task_status(int err, int dflt);

#endif
