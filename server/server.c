/* server: a server assembled from its configuration, the same for
 * shahidi-server (main.c) and the fuzz target of its HTTP layer. */
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "http.h"
#include "ratelimit.h"
#include "rebuild.h"
#include "routes.h"

const uint32_t server_latency_us[SERVER_LATENCY_BOUNDS] = {
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000,
};

void server_config_default(struct server_config *cfg)
{
	*cfg = (struct server_config){
		.data_dir = "shahidi-data",
		.listen = "127.0.0.1:8080",
		.max_body = (size_t)16 << 20,
		.max_header = 8 * 1024,
		.header_timeout_ms = 15000,
		.body_timeout_ms = 300000,
		.body_stall_ms = 30000,
		.idle_timeout_ms = 60000,
		.write_timeout_ms = 60000,
		.max_conns = 4096,
		.max_inflight = (size_t)64 << 20,
		.max_queue = 128,
		.commit_window_us = 5000,
		.pull_limit = 1000,
		.auth_burst = 20,
		.auth_refill_ms = 3000,
		.max_file = (size_t)100 << 20,
		.upload_expiry_ms = 14ull * 86400 * 1000,
	};
	sync_limits_default(&cfg->sync);
}

int server_init(struct server *srv, char *err, size_t errlen)
{
	const struct server_config *cfg = &srv->cfg;
	char ferr[512];
	int r;
	if ((r = ratelimit_new(cfg->auth_burst, cfg->auth_refill_ms, &srv->auth_limit)) < 0) {
		snprintf(err, errlen, "rate limit: %s", strerror(-r));
		return r;
	}
	ferr[0] = 0;
	if ((r = form_registry_new(&srv->forms)) < 0 ||
	    (r = form_registry_add_builtin(srv->forms, ferr, sizeof(ferr))) < 0 ||
	    (cfg->forms_path &&
	     (r = form_registry_add_path(srv->forms, cfg->forms_path, ferr, sizeof(ferr))) < 0)) {
		snprintf(err, errlen, "forms: %s", ferr[0] ? ferr : strerror(-r));
		return r;
	}
	struct buf packed = {0};
	if ((r = form_registry_pack(srv->forms, &packed)) < 0) {
		snprintf(err, errlen, "forms: %s", strerror(-r));
		return r;
	}
	srv->forms_packed = packed.data;
	srv->forms_packed_len = packed.len;

	struct store_opts so = {.map_size = cfg->map_size, .max_map_size = cfg->max_map_size,
				.max_skew_ms = cfg->max_skew_ms, .unsafe_nosync = cfg->unsafe_nosync,
				.release_above = cfg->release_above};
	if ((r = store_open(cfg->data_dir, &so, &srv->store, err, errlen)) < 0)
		return r;
	if ((r = rebuild_if_old(srv->store, stderr)) < 0) {
		snprintf(err, errlen, "rebuilding the records of an older store format: %s",
			 strerror(-r));
		return r;
	}
	srv->loop = uv_default_loop();
	return 0;
}

static int tokens__build(struct store_txn *t, void *ud)
{
	struct auth_cache **c = ud;
	auth_cache_free(*c); /* run again after the map grew */
	*c = NULL;
	if (auth_cache_build(t, c) < 0)
		*c = NULL; /* checked in the store until the next try */
	return 0;
}

struct tokens_job {
	struct writer_job job;
	struct server *srv;
	struct auth_cache *c;
};

static void tokens__built(struct writer_job *job)
{
	struct tokens_job *j = job->ud;
	if (job->result == 0)
		server_tokens_install(j->srv, j->c);
	else
		auth_cache_free(j->c);
	j->srv->tokens_pending = false;
	free(j);
}

void server_tokens_refresh(struct server *srv)
{
	if (srv->tokens_pending || srv->stopping || !srv->writer)
		return;
	struct tokens_job *j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->srv = srv;
	j->job.kind = WJOB_CALL;
	j->job.fn = tokens__build;
	j->job.fn_ud = &j->c;
	j->job.done = tokens__built;
	j->job.ud = j;
	srv->tokens_pending = true;
	writer_submit(srv->writer, &j->job);
}

void server_tokens_install(struct server *srv, struct auth_cache *c)
{
	if (!c)
		return;
	if (srv->tokens && auth_cache_seq(srv->tokens) > auth_cache_seq(c)) {
		auth_cache_free(c);
		return;
	}
	auth_cache_free(srv->tokens);
	srv->tokens = c;
}

int server_start(struct server *srv, char *err, size_t errlen)
{
	struct auth_cache *c = NULL;
	int r = store_write(srv->store, tokens__build, &c);
	if (r < 0) {
		snprintf(err, errlen, "cannot read the tokens: %s", strerror(-r));
		return r;
	}
	server_tokens_install(srv, c);
	r = writer_start(srv->loop, srv->store, srv->cfg.commit_window_us, &srv->writer);
	if (r < 0) {
		snprintf(err, errlen, "cannot start the writer: %s", uv_strerror(r));
		return r;
	}
	if ((r = http_start(srv, &routes_handlers)) < 0) {
		/* http_start has said why on stderr */
		snprintf(err, errlen, "%s", "");
		return r;
	}
	return 0;
}

void server_free(struct server *srv)
{
	http_free(srv);
	writer_free(srv->writer);
	srv->writer = NULL;
	store_close(srv->store);
	srv->store = NULL;
	form_registry_free(srv->forms);
	srv->forms = NULL;
	free(srv->forms_packed);
	srv->forms_packed = NULL;
	ratelimit_free(srv->auth_limit);
	srv->auth_limit = NULL;
	auth_cache_free(srv->tokens);
	srv->tokens = NULL;
}
