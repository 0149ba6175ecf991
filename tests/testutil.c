#include "testutil.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "check.h"
#include "common.h"
#include "gen.h"
#include "hlc.h"

void tu_tmpdir(char path[256])
{
	const char *base = getenv("TMPDIR");
	snprintf(path, 256, "%s/shahidi-test-XXXXXX", base && *base ? base : "/tmp");
	CHECK(mkdtemp(path) != NULL);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

void tu_rmrf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct store *tu_store_open(const char *dir, const struct store_opts *o)
{
	struct store *s = NULL;
	char err[512];
	int r = store_open(dir, o, &s, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "store_open: %s\n", err);
	CHECK(r == 0);
	return s;
}

struct form_registry *tu_forms(bool with_v2)
{
	struct form_registry *reg;
	char err[512] = "";
	CHECK(form_registry_new(&reg) == 0);
	CHECK(form_registry_add_builtin(reg, err, sizeof(err)) == 0);
	if (with_v2) {
		int r = form_registry_add_path(reg, SRCDIR "/tests/fixtures/incident_report.v2.json",
					       err, sizeof(err));
		if (r < 0)
			fprintf(stderr, "%s\n", err);
		CHECK(r == 0);
	}
	return reg;
}

uint64_t tu_enrol(struct store *s, const char *name, const char *county, uint32_t role,
		  char *token)
{
	struct auth_enrol e = {name, county, role};
	uint64_t id;
	char tok[AUTH_TOKEN_LEN + 1], err[256];
	CHECK(auth_enrol_store(s, &e, sh_now_ms(), &id, tok, err, sizeof(err)) == 0);
	if (token)
		memcpy(token, tok, sizeof(tok));
	return id;
}

static Shahidi__V1__Value *value(struct arena *a)
{
	Shahidi__V1__Value *v = arena_alloc(a, sizeof(*v));
	CHECK(v);
	shahidi__v1__value__init(v);
	return v;
}

static char *astr(struct arena *a, const char *s)
{
	char *p = arena_memdup(a, s, strlen(s) + 1);
	CHECK(p);
	return p;
}

Shahidi__V1__Value *tu_text(struct arena *a, const char *s)
{
	Shahidi__V1__Value *v = value(a);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_TEXT;
	v->text = astr(a, s);
	return v;
}

Shahidi__V1__Value *tu_choice(struct arena *a, const char *code)
{
	Shahidi__V1__Value *v = value(a);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_CHOICE;
	v->choice = astr(a, code);
	return v;
}

Shahidi__V1__Value *tu_int(struct arena *a, int64_t i)
{
	Shahidi__V1__Value *v = value(a);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_INTEGER;
	v->integer = i;
	return v;
}

Shahidi__V1__Value *tu_bool(struct arena *a, bool b)
{
	Shahidi__V1__Value *v = value(a);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
	v->boolean = b;
	return v;
}

Shahidi__V1__Value *tu_date(struct arena *a, const char *s)
{
	Shahidi__V1__Value *v = value(a);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_DATE;
	v->date = astr(a, s);
	return v;
}

Shahidi__V1__Change *tu_change(struct arena *a, const uint8_t rid[16], uint64_t change_id,
			       uint64_t hlc)
{
	Shahidi__V1__Change *c = arena_alloc(a, sizeof(*c));
	CHECK(c);
	shahidi__v1__change__init(c);
	c->change_id = change_id;
	c->record_id.data = arena_memdup(a, rid, 16);
	c->record_id.len = 16;
	c->form_id = "incident_report";
	c->form_version = 1;
	c->hlc = hlc;
	return c;
}

static Shahidi__V1__Stamp **stamps(struct arena *a, size_t n, const uint64_t *base)
{
	Shahidi__V1__Stamp **arr = arena_alloc(a, (n + 1) * sizeof(*arr));
	CHECK(arr);
	for (size_t i = 0; i < n; i++) {
		arr[i] = arena_alloc(a, sizeof(**arr));
		CHECK(arr[i]);
		shahidi__v1__stamp__init(arr[i]);
		arr[i]->hlc = base[2 * i];
		arr[i]->device = base[2 * i + 1];
	}
	return arr;
}

void tu_set(struct arena *a, Shahidi__V1__Change *c, uint32_t field, Shahidi__V1__Value *v,
	    size_t n_base, const uint64_t *base)
{
	Shahidi__V1__FieldWrite *fw = arena_alloc(a, sizeof(*fw));
	Shahidi__V1__FieldWrite **arr = arena_alloc(a, (c->n_fields + 1) * sizeof(*arr));
	CHECK(fw && arr);
	shahidi__v1__field_write__init(fw);
	fw->field = field;
	fw->value = v;
	fw->supersedes = stamps(a, n_base, base);
	fw->n_supersedes = n_base;
	if (c->n_fields)
		memcpy(arr, c->fields, c->n_fields * sizeof(*arr));
	arr[c->n_fields++] = fw;
	c->fields = arr;
}

void tu_delete(struct arena *a, Shahidi__V1__Change *c, bool deleted, size_t n_base,
	       const uint64_t *base)
{
	Shahidi__V1__Deletion *d = arena_alloc(a, sizeof(*d));
	CHECK(d);
	shahidi__v1__deletion__init(d);
	d->deleted = deleted;
	d->supersedes = stamps(a, n_base, base);
	d->n_supersedes = n_base;
	c->deletion = d;
}

Shahidi__V1__Change *tu_report(struct arena *a, const struct form_registry *forms, uint64_t seed,
			       uint64_t change_id, uint64_t hlc)
{
	struct gen_rng rng = {seed};
	const struct form *f = form_registry_find(forms, "incident_report", 1);
	CHECK(f);
	Shahidi__V1__Change *c = gen_report(&rng, a, f, change_id, hlc, hlc_ms(hlc));
	CHECK(c);
	return c;
}

void tu_batch(struct buf *out, uint64_t device, uint64_t batch_seq,
	      Shahidi__V1__Change **changes, size_t n, enum codec_enc enc)
{
	Shahidi__V1__PushBatch pb = SHAHIDI__V1__PUSH_BATCH__INIT;
	struct buf raw = {0};
	pb.device = device;
	pb.batch_seq = batch_seq;
	pb.app_version = "test";
	pb.changes = changes;
	pb.n_changes = n;
	CHECK(buf_reserve(&raw, shahidi__v1__push_batch__get_packed_size(&pb)) == 0);
	raw.len = shahidi__v1__push_batch__pack(&pb, raw.data);
	buf_reset(out);
	if (enc == CODEC_IDENTITY)
		CHECK(buf_append(out, raw.data, raw.len) == 0);
	else
		CHECK(codec_deflate(raw.data, raw.len, enc, 6, out) == 0);
	buf_free(&raw);
}

struct push_ctx {
	struct sync_batch *b;
	struct sync_result res;
};

static int push_fn(struct store_txn *t, void *ud)
{
	struct push_ctx *c = ud;
	return sync_apply(t, c->b, sh_now_ms(), &c->res);
}

int tu_push(struct store *s, const struct form_registry *forms, const struct buf *body,
	    Shahidi__V1__PushResponse **ret_resp, struct form_verdict *ret_verdict)
{
	struct sync_limits lim;
	struct form_verdict v = {{0}};
	struct push_ctx c = {0};
	sync_limits_default(&lim);
	int r = sync_decode(forms, &lim, body->data, body->len, CODEC_AUTO, sh_now_ms(), &c.b, &v);
	if (ret_verdict)
		*ret_verdict = v;
	if (r < 0)
		return r;
	r = store_write(s, push_fn, &c);
	if (r == 0 && ret_resp) {
		*ret_resp = shahidi__v1__push_response__unpack(NULL, c.res.response_len,
								c.res.response);
		CHECK(*ret_resp);
	}
	sync_batch_free(c.b);
	return r;
}

void tu_state(struct store *s, struct tu_state *ret)
{
	struct store_txn *t;
	struct store_info info;
	struct arena *a = arena_new();
	CHECK(a && store_begin(s, false, &t) == 0);
	CHECK(store_records_digest(t, a, ret->records, &ret->n_records) == 0);
	CHECK(store_info(t, &info) == 0);
	ret->log_entries = info.log_entries;
	memcpy(ret->head, info.head_hash, 32);
	store_abort(t);
	arena_free(a);
}

bool tu_state_eq(const struct tu_state *a, const struct tu_state *b)
{
	return !memcmp(a->records, b->records, 32) && a->n_records == b->n_records &&
	       a->log_entries == b->log_entries && !memcmp(a->head, b->head, 32);
}

uint64_t tu_now_hlc(void)
{
	return hlc_make(sh_now_ms(), 0);
}

void tu_push1(struct store *s, const struct form_registry *forms, uint64_t device,
	      uint64_t batch_seq, Shahidi__V1__Change *c)
{
	struct buf body = {0};
	Shahidi__V1__PushResponse *resp;
	tu_batch(&body, device, batch_seq, &c, 1, CODEC_DEFLATE);
	CHECK_EQ_INT(tu_push(s, forms, &body, &resp, NULL), 0);
	CHECK_EQ_INT(resp->results[0]->status, SHAHIDI__V1__CHANGE_RESULT__STATUS__APPLIED);
	shahidi__v1__push_response__free_unpacked(resp, NULL);
	buf_free(&body);
}

struct assign_args {
	const uint8_t *rid;
	uint64_t device;
};

static int assign_fn(struct store_txn *t, void *ud)
{
	const struct assign_args *x = ud;
	struct arena *a = arena_new();
	int r = a ? store_assign(t, a, x->rid, x->device) : -ENOMEM;
	arena_free(a);
	return r;
}

void tu_assign(struct store *s, const uint8_t rid[16], uint64_t device)
{
	struct assign_args x = {rid, device};
	CHECK_EQ_INT(store_write(s, assign_fn, &x), 0);
}
