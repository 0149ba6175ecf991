/* Tokens checked without a transaction: the cache the server's event loop
 * uses, and the number that says when another process (the CLI) has
 * written to the store since it was built, so that a revocation by the
 * CLI takes effect on the next request. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "check.h"
#include "common.h"
#include "store.h"
#include "testutil.h"

static int build_fn(struct store_txn *t, void *ud)
{
	return auth_cache_build(t, ud);
}

static struct auth_cache *build(struct store *s)
{
	struct auth_cache *c = NULL;
	CHECK_EQ_INT(store_write(s, build_fn, &c), 0);
	CHECK(c);
	return c;
}

static int revoke_fn(struct store_txn *t, void *ud)
{
	return auth_revoke(t, *(uint64_t *)ud, sh_now_ms());
}

static int nothing_fn(struct store_txn *t, void *ud)
{
	(void)t;
	(void)ud;
	return 0;
}

static void test_cache_checks_as_the_store_does(void)
{
	char dir[256], ta[AUTH_TOKEN_LEN + 1], tc[AUTH_TOKEN_LEN + 1];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	/* a store with no device yet: every token refused */
	{
		const struct auth_entry *e;
		struct auth_cache *c0 = build(s);
		CHECK_EQ_INT(auth_cache_check(c0, "shd_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
					      AUTH_TOKEN_LEN, &e), -EACCES);
		auth_cache_free(c0);
	}
	uint64_t a = tu_enrol(s, "phone", "042", ROLE_DEVICE, ta);
	uint64_t co = tu_enrol(s, "coordinator", "042,047", ROLE_COORDINATOR, tc);
	struct auth_cache *c = build(s);
	const struct auth_entry *e;
	CHECK_EQ_INT(auth_cache_check(c, ta, strlen(ta), &e), 0);
	CHECK(e->id == a && e->role == ROLE_DEVICE && !strcmp(e->county, "042"));
	CHECK_EQ_INT(auth_cache_check(c, tc, strlen(tc), &e), 0);
	CHECK(e->id == co && e->role == ROLE_COORDINATOR);
	CHECK(!e->scope.all && scope_has(&e->scope, "047") && !scope_has(&e->scope, "001"));
	/* wrong, malformed, empty */
	char wrong[AUTH_TOKEN_LEN + 1];
	memcpy(wrong, ta, sizeof(wrong));
	wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
	CHECK_EQ_INT(auth_cache_check(c, wrong, strlen(wrong), &e), -EACCES);
	CHECK_EQ_INT(auth_cache_check(c, ta, strlen(ta) - 1, &e), -EACCES);
	CHECK_EQ_INT(auth_cache_check(c, "", 0, &e), -EACCES);
	CHECK_EQ_INT(auth_cache_check(NULL, ta, strlen(ta), &e), -EACCES);
	/* revoked: absent from the next cache, which is the newer one */
	CHECK_EQ_INT(store_write(s, revoke_fn, &a), 0);
	struct auth_cache *c2 = build(s);
	CHECK_EQ_INT(auth_cache_check(c2, ta, strlen(ta), &e), -EACCES);
	CHECK_EQ_INT(auth_cache_check(c2, tc, strlen(tc), &e), 0);
	CHECK(auth_cache_seq(c2) > auth_cache_seq(c));
	auth_cache_free(c);
	auth_cache_free(c2);
	auth_cache_free(NULL);
	store_close(s);
	tu_rmrf(dir);
}

/* A metrics token: a role of its own, no county, a scope of no county
 * (it reads /metrics only; routes.c refuses it everything else). */
static void test_metrics_role(void)
{
	char dir[256], tm[AUTH_TOKEN_LEN + 1], err[200];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint32_t role;
	CHECK_EQ_INT(store_role_parse("metrics", &role), 0);
	CHECK_EQ_INT(role, ROLE_METRICS);
	CHECK_EQ_STR(store_role_name(ROLE_METRICS), "metrics");
	CHECK_EQ_INT(store_role_parse("metric", &role), -EINVAL);
	struct auth_enrol with_county = {"prometheus", "047", ROLE_METRICS, false};
	uint64_t id;
	char tok[AUTH_TOKEN_LEN + 1];
	err[0] = 0;
	CHECK_EQ_INT(auth_enrol_store(s, &with_county, 1, &id, tok, err, sizeof(err)), -EINVAL);
	CHECK_EQ_STR(err, "a metrics token has no county");
	struct auth_enrol beyond = {"x", "", ROLE_METRICS + 1, false};
	CHECK_EQ_INT(auth_enrol_store(s, &beyond, 1, &id, tok, err, sizeof(err)), -EINVAL);
	uint64_t m = tu_enrol(s, "prometheus", "", ROLE_METRICS, tm);
	struct auth_cache *c = build(s);
	const struct auth_entry *e;
	CHECK_EQ_INT(auth_cache_check(c, tm, strlen(tm), &e), 0);
	CHECK(e->id == m && e->role == ROLE_METRICS && !e->county[0]);
	CHECK(!e->scope.all && !scope_has(&e->scope, "047") && !scope_has(&e->scope, ""));
	auth_cache_free(c);
	store_close(s);
	tu_rmrf(dir);
}

/* Another process revokes a token: the cache stops being current at
 * once, and stays so after this process commits on top of that write. */
static const char *self;

/* --revoke DIR ID: what the CLI's revoke does, in a process of its own. */
static int revoke_main(const char *dir, const char *id)
{
	struct store *o;
	char err[256];
	struct store_opts so = {0};
	uint64_t dev = strtoull(id, NULL, 10);
	int r = store_open(dir, &so, &o, err, sizeof(err));
	if (r == 0)
		r = store_write(o, revoke_fn, &dev);
	store_close(o);
	return r == 0 ? 0 : 1;
}

static void test_others_writes_are_seen(void)
{
	char dir[256], ta[AUTH_TOKEN_LEN + 1];
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	uint64_t a = tu_enrol(s, "phone", "042", ROLE_DEVICE, ta);
	struct auth_cache *c = build(s);
	CHECK_EQ_INT(auth_cache_stamp(c), store_others_writes(s));
	/* this process's own commits, empty or not, leave it current */
	CHECK_EQ_INT(store_write(s, nothing_fn, NULL), 0);
	CHECK_EQ_INT(auth_cache_stamp(c), store_others_writes(s));
	tu_enrol(s, "another phone", "042", ROLE_DEVICE, NULL);
	CHECK_EQ_INT(auth_cache_stamp(c), store_others_writes(s));

	/* the CLI: another process, with its own environment on the same
	 * directory (this program again, from scratch: see main) */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char id[32];
		snprintf(id, sizeof(id), "%" PRIu64, a);
		execl(self, self, "--revoke", dir, id, (char *)NULL);
		_exit(127);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(auth_cache_stamp(c) != store_others_writes(s));
	/* the server's writer commits before anyone looks again */
	CHECK_EQ_INT(store_write(s, nothing_fn, NULL), 0);
	tu_enrol(s, "third phone", "042", ROLE_DEVICE, NULL);
	CHECK(auth_cache_stamp(c) != store_others_writes(s));
	/* a new cache is current again, and knows the revocation */
	struct auth_cache *c2 = build(s);
	const struct auth_entry *e;
	CHECK_EQ_INT(auth_cache_stamp(c2), store_others_writes(s));
	CHECK_EQ_INT(auth_cache_check(c2, ta, strlen(ta), &e), -EACCES);
	auth_cache_free(c);
	auth_cache_free(c2);
	store_close(s);
	tu_rmrf(dir);
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--revoke"))
		return revoke_main(argv[2], argv[3]);
	self = argv[0];
	RUN(test_cache_checks_as_the_store_does);
	RUN(test_others_writes_are_seen);
	RUN(test_metrics_role);
	return 0;
}
