/* Fuzz target: a push body as the server's decoder sees it (compressed or
 * not), then applied to a real store, as the writer would. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "form.h"
#include "store.h"
#include "sync.h"

static struct form_registry *forms;
static struct store *store;

/* The devices the corpus names: 1 (crash-no-form-id) and 2 to 5, one seed
 * batch each (tests/fuzz/make_seeds.sh). */
#define FUZZ_DEVICES 5

/* Inputs that applied at least one change: the replay test checks that
 * the seeds get that far (fuzz_replay_check). */
static unsigned applied_inputs;

static void setup(void)
{
	char err[256], dir[] = "/tmp/shahidi-fuzz-push-XXXXXX";
	form_registry_new(&forms);
	form_registry_add_builtin(forms, err, sizeof(err));
	if (!mkdtemp(dir))
		abort();
	struct store_opts o = {.unsafe_nosync = true}; /* speed; durability is not what is fuzzed */
	if (store_open(dir, &o, &store, err, sizeof(err)) < 0)
		abort();
	struct store_txn *t;
	store_begin(store, true, &t);
	for (uint64_t id = 1; id <= FUZZ_DEVICES; id++) {
		store_device_t d = SHAHIDI__STORE__V1__DEVICE__INIT;
		d.id = id;
		d.name = "fuzz";
		d.county = "047";
		d.role = ROLE_DEVICE;
		store_device_put(t, &d);
	}
	store_commit(t);
}

static int apply(struct store_txn *t, void *ud)
{
	struct sync_result res;
	int r = sync_apply(t, ud, sh_now_ms(), &res);
	if (r == 0 && res.applied)
		applied_inputs++;
	/* refusals that change nothing are fine */
	return r == -EEXIST || r == -ENOENT ? 0 : r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!store)
		setup();
	struct sync_limits lim;
	struct form_verdict v;
	struct sync_batch *b;
	sync_limits_default(&lim);
	lim.max_inflated = 1 << 20; /* keep each input cheap */
	if (sync_decode(forms, &lim, data, size, CODEC_AUTO, sh_now_ms(), &b, &v) < 0)
		return 0;
	int r = store_write(store, apply, b);
	if (r < 0 && r != -ENOSPC)
		abort(); /* a decoded batch must apply or be refused, never break */
	sync_batch_free(b);
	return 0;
}

int fuzz_replay_check(void)
{
	const char *min = getenv("SHAHIDI_FUZZ_MIN_APPLIED");
	fprintf(stderr, "fuzz_push: %u inputs applied changes\n", applied_inputs);
	if (min && applied_inputs < (unsigned)atoi(min)) {
		fprintf(stderr, "fuzz_push: fewer than %s reached the apply path\n", min);
		return 1;
	}
	return 0;
}
