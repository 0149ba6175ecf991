#include "task.h"

#include <errno.h>
#include <stddef.h>

#include "http.h"
#include "server.h"

void task_hold(struct task *t, struct http_conn *c, bool push)
{
	t->c = c;
	t->srv = http_conn_server(c);
	t->push = push;
	http_conn_ref(c);
	t->srv->busy++;
	if (!push)
		t->srv->busy_others++;
	/* A push held here is decoded next and then submitted: the writer's
	 * commit window waits for it (task_submit or task_release ends it). */
	t->job.expected = push;
	if (push)
		writer_expect(t->srv->writer, 1);
}

void task_release(struct task *t)
{
	struct server *srv = t->srv;
	if (t->job.expected) { /* refused before it reached the writer */
		t->job.expected = false;
		writer_expect(srv->writer, -1);
	}
	http_conn_unref(t->c);
	t->c = NULL;
	srv->busy--;
	if (!t->push)
		srv->busy_others--;
	http_kick(srv);
}

static void task__run(uv_work_t *w)
{
	struct task *t = w->data;
	t->run(t);
}

static void task__ran(uv_work_t *w, int status)
{
	struct task *t = w->data;
	(void)status; /* never cancelled: nothing calls uv_cancel */
	t->done(t);
}

int task_queue(struct task *t, void (*run)(struct task *t), void (*done)(struct task *t))
{
	t->run = run;
	t->done = done;
	t->work.data = t;
	return uv_queue_work(t->srv->loop, &t->work, task__run, task__ran);
}

static void task__committed(struct writer_job *job)
{
	struct task *t = job->ud;
	t->done(t);
}

void task_submit(struct task *t, void (*done)(struct task *t))
{
	t->done = done;
	t->job.done = task__committed;
	t->job.ud = t;
	writer_submit(t->srv->writer, &t->job);
}

int task_status(int err, int dflt)
{
	switch (err) {
	case -ENOSPC:
		return 507;
	case -EMSGSIZE:
		return 413;
	case -ENOMEM:
	case -EAGAIN:
		return 503;
	case -EEXIST:
		return 409;
	default:
		return dflt;
	}
}
