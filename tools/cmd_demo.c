/* shahidi demo: the whole core path in one go, for the README's quick
 * start: a store, two phones, a batch of reports, two concurrent edits of
 * one field, and the merged record with its conflict. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "auth.h"
#include "cli.h"
#include "codec.h"
#include "common.h"
#include "gen.h"
#include "hlc.h"
#include "shahidi.pb-c.h"
#include "uuid.h"

static int assign_b(struct store_txn *t, void *ud)
{
	void **args = ud;
	struct arena *a = arena_new();
	int r = a ? store_assign(t, a, args[0], *(const uint64_t *)args[1]) : -ENOMEM;
	arena_free(a);
	return r;
}

static int pack_batch(Shahidi__V1__PushBatch *pb, struct buf *out)
{
	struct buf raw = {0};
	int r = buf_reserve(&raw, shahidi__v1__push_batch__get_packed_size(pb));
	if (r == 0) {
		raw.len = shahidi__v1__push_batch__pack(pb, raw.data);
		r = codec_deflate(raw.data, raw.len, CODEC_DEFLATE, 6, out);
	}
	buf_free(&raw);
	return r;
}

/* One device's edit of one choice field, having seen the value `seen`. */
static Shahidi__V1__Change *edit(struct arena *a, const Shahidi__V1__Change *of, uint64_t change_id,
				 uint64_t hlc, uint32_t field, const char *code,
				 Shahidi__V1__Stamp *seen)
{
	Shahidi__V1__Change *c = arena_zalloc(a, sizeof(*c));
	Shahidi__V1__FieldWrite *fw = arena_zalloc(a, sizeof(*fw));
	Shahidi__V1__Value *v = arena_zalloc(a, sizeof(*v));
	Shahidi__V1__FieldWrite **fws = arena_alloc(a, sizeof(*fws));
	Shahidi__V1__Stamp **base = arena_alloc(a, sizeof(*base));
	if (!c || !fw || !v || !fws || !base)
		return NULL;
	shahidi__v1__change__init(c);
	shahidi__v1__field_write__init(fw);
	shahidi__v1__value__init(v);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_CHOICE;
	v->choice = (char *)code;
	fw->field = field;
	fw->value = v;
	base[0] = seen;
	fw->supersedes = base;
	fw->n_supersedes = 1;
	fws[0] = fw;
	c->change_id = change_id;
	c->record_id = of->record_id;
	c->form_id = of->form_id;
	c->form_version = of->form_version;
	c->hlc = hlc;
	c->fields = fws;
	c->n_fields = 1;
	return c;
}

int cmd_demo(int argc, char **argv)
{
	const char *data;
	int rc;
	if (!cli_data_only(argc, argv,
			   "Usage: shahidi demo [--data DIR]\n\n"
			   "Makes (or reuses) a store, enrols two demo phones, ingests a batch\n"
			   "of three synthetic incident reports, then one edit from each phone to\n"
			   "the same field of the first report, made without seeing each other,\n"
			   "and prints the merged record: both edits are kept, one wins by its\n"
			   "stamp, and the conflict is listed for a coordinator.\n",
			   &data, &rc))
		return rc;

	struct form_registry *reg = cli_load_forms(NULL);
	struct store *s = reg ? cli_open_store(data, false) : NULL;
	struct arena *a = arena_new();
	struct buf body = {0};
	rc = 1;
	if (!s || !a)
		goto out;
	const struct form *f = form_registry_find(reg, "incident_report", 1);
	const struct form_field *risk = NULL;
	for (size_t i = 0; f && i < f->n_fields; i++)
		if (!strcmp(f->fields[i].name, "risk_level"))
			risk = &f->fields[i];
	if (!risk) {
		cli_err("the built-in incident report has no risk_level field");
		goto out;
	}

	struct auth_enrol enrol_a = {"demo phone A (Nairobi)", "047", ROLE_DEVICE};
	struct auth_enrol enrol_b = {"demo phone B (Nairobi)", "047", ROLE_DEVICE};
	struct {
		uint64_t id;
		char token[AUTH_TOKEN_LEN + 1];
	} p1, p2;
	char err[256];
	if (auth_enrol_store(s, &enrol_a, sh_now_ms(), &p1.id, p1.token, err, sizeof(err)) < 0 ||
	    auth_enrol_store(s, &enrol_b, sh_now_ms(), &p2.id, p2.token, err, sizeof(err)) < 0) {
		cli_err("cannot enrol the demo phones");
		goto out;
	}
	printf("== enrolled phone A %016" PRIx64 " and phone B %016" PRIx64 "\n", p1.id, p2.id);

	uint64_t now = sh_now_ms();
	struct hlc ca = {0}, cb = {0};
	struct gen_rng rng = {now};
	Shahidi__V1__PushBatch pb = SHAHIDI__V1__PUSH_BATCH__INIT;
	Shahidi__V1__Change *reports[3];
	for (int i = 0; i < 3; i++)
		if (!(reports[i] = gen_report(&rng, a, f, (uint64_t)i + 1, hlc_tick(&ca, now), now)))
			goto out;
	pb.device = p1.id;
	pb.batch_seq = 1;
	pb.app_version = "demo";
	pb.changes = reports;
	pb.n_changes = 3;
	if (pack_batch(&pb, &body) < 0)
		goto out;
	printf("\n== phone A pushes 3 new reports (%zu bytes compressed)\n", body.len);
	if (cli_ingest_bytes(s, reg, body.data, body.len, false) != 0)
		goto out;

	/* A coordinator assigns the report to phone B too (a phone changes
	 * only what it created or was assigned); both phones then have it as
	 * created, and each changes its risk level without seeing the other's
	 * edit. */
	printf("\n== a coordinator assigns the first report to phone B\n");
	if (store_write(s, assign_b, (void *[]){reports[0]->record_id.data, &p2.id}) < 0) {
		cli_err("cannot assign the report to phone B");
		goto out;
	}
	Shahidi__V1__Stamp seen = SHAHIDI__V1__STAMP__INIT;
	seen.hlc = reports[0]->hlc;
	seen.device = p1.id;
	cb.last = ca.last; /* phone B pulled the report, and with it A's clock */
	Shahidi__V1__Change *ea = edit(a, reports[0], 4, hlc_tick(&ca, now + 1000), risk->number,
				       "high", &seen);
	Shahidi__V1__Change *eb = edit(a, reports[0], 1, hlc_tick(&cb, now + 2000), risk->number,
				       "urgent", &seen);
	if (!ea || !eb)
		goto out;
	pb.batch_seq = 2;
	pb.changes = &ea;
	pb.n_changes = 1;
	buf_reset(&body);
	if (pack_batch(&pb, &body) < 0)
		goto out;
	printf("\n== phone A sets risk level to 'high'\n");
	if (cli_ingest_bytes(s, reg, body.data, body.len, false) != 0)
		goto out;
	pb.device = p2.id;
	pb.batch_seq = 1;
	pb.changes = &eb;
	buf_reset(&body);
	if (pack_batch(&pb, &body) < 0)
		goto out;
	printf("\n== phone B, offline, had set it to 'urgent'\n");
	if (cli_ingest_bytes(s, reg, body.data, body.len, false) != 0)
		goto out;

	struct store_txn *t;
	merge_rec_t *rec;
	if (store_begin(s, false, &t) < 0)
		goto out;
	int r = store_record_get(t, a, reports[0]->record_id.data, &rec);
	if (r == 0) {
		printf("\n== the merged record\n");
		cli_print_record(rec, f, false);
	}
	store_abort(t);
	if (r < 0)
		goto out;
	char id[UUID_STR_LEN + 1];
	uuid_fmt(reports[0]->record_id.data, id);
	printf("\nBoth edits are kept; the later stamp wins until a coordinator resolves it.\n"
	       "Try:  build/tools/shahidi show --data %s %s\n"
	       "      build/tools/shahidi conflicts --data %s\n"
	       "      build/tools/shahidi verify --data %s\n",
	       data, id, data, data);
	rc = 0;
out:
	buf_free(&body);
	arena_free(a);
	store_close(s);
	form_registry_free(reg);
	return rc;
}
