/* The status coordinators see, through the scope of their counties: a
 * county scope shows that county's records and devices only, and no
 * store-wide figures; a record's history names the counties it was in.
 * Without include_sensitive (a coordinator's), a record's history and the
 * conflicts list keep every write of a sensitive field but not its value.
 * And the audit log's entries, as the office writes them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "check.h"
#include "common.h"
#include "render.h"
#include "status.h"
#include "store.h"
#include "testutil.h"
#include "uuid.h"

static void county_of(struct store *s, const struct form_registry *forms, const uint8_t id[16],
		      char county[4])
{
	struct store_txn *t;
	struct arena *a = arena_new();
	merge_rec_t *rec;
	CHECK(a && store_begin(s, false, &t) == 0);
	CHECK_EQ_INT(store_record_get(t, a, id, &rec), 0);
	render_record_county(rec, form_registry_find(forms, rec->form_id, rec->form_version), county);
	store_abort(t);
	arena_free(a);
}

int main(void)
{
	char dir[256], c1[4] = "", c2[4] = "";
	uint8_t r1[16], r2[16];
	struct buf body = {0};
	struct arena *a = arena_new();
	tu_tmpdir(dir);
	struct store *s = tu_store_open(dir, NULL);
	struct form_registry *forms = tu_forms(false);
	uint64_t phone = tu_enrol(s, "phone", "042", ROLE_DEVICE, NULL);

	fprintf(stderr, "-- two reports in two counties\n");
	Shahidi__V1__Change *ch = tu_report(a, forms, 1, 1, tu_now_hlc());
	memcpy(r1, ch->record_id.data, 16);
	tu_batch(&body, phone, 1, &ch, 1, CODEC_IDENTITY);
	CHECK_EQ_INT(tu_push(s, forms, &body, NULL, NULL), 0);
	county_of(s, forms, r1, c1);
	for (uint64_t seed = 2, cid = 2; !c2[0] || !strcmp(c1, c2); seed++, cid++) {
		CHECK(seed < 200);
		ch = tu_report(a, forms, seed, cid, tu_now_hlc());
		memcpy(r2, ch->record_id.data, 16);
		tu_batch(&body, phone, cid, &ch, 1, CODEC_IDENTITY);
		CHECK_EQ_INT(tu_push(s, forms, &body, NULL, NULL), 0);
		county_of(s, forms, r2, c2);
	}
	CHECK(c1[0] && c2[0]);

	fprintf(stderr, "-- all counties: every record, store-wide figures\n");
	json_t *j;
	struct status_opts o = {.scope = scope_all(), .silent_days = 7, .now_ms = sh_now_ms()};
	CHECK_EQ_INT(status_collect(s, forms, &o, &j), 0);
	json_t *server = json_object_get(j, "server");
	CHECK(json_integer_value(json_object_get(server, "records")) >= 2);
	CHECK(json_object_get(server, "log_entries"));
	CHECK_EQ_INT(json_array_size(json_object_get(j, "scope")), 0);
	json_decref(j);

	fprintf(stderr, "-- one county: its records only\n");
	o.scope = scope_none();
	CHECK_EQ_INT(scope_add(&o.scope, c1), 0);
	CHECK_EQ_INT(status_collect(s, forms, &o, &j), 0);
	server = json_object_get(j, "server");
	CHECK_EQ_INT(json_integer_value(json_object_get(server, "records")), 1);
	CHECK(!json_object_get(server, "log_entries"));
	CHECK_EQ_INT(json_array_size(json_object_get(j, "scope")), 1);
	CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(j, "scope"), 0)), c1);
	size_t i;
	json_t *row;
	json_array_foreach(json_object_get(j, "counties"), i, row)
		CHECK_EQ_STR(json_string_value(json_object_get(row, "county")), c1);
	json_decref(j);

	fprintf(stderr, "-- history: the counties a record was in\n");
	char counties[64] = "";
	CHECK_EQ_INT(status_history(s, forms, r2, true, &j, counties, sizeof(counties)), 0);
	CHECK_EQ_STR(counties, c2);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "changes")), 1);
	json_decref(j);
	uint8_t none[16] = {1};
	CHECK_EQ_INT(status_history(s, forms, none, true, &j, NULL, 0), -ENOENT);

	fprintf(stderr, "-- sensitive fields: written twice, unseen: a conflict\n");
	uint64_t phone2 = tu_enrol(s, "phone 2", c2, ROLE_DEVICE, NULL), cid = 1000;
	tu_assign(s, r2, phone2); /* it may change the record */
	for (int k = 0; k < 2; k++) {
		Shahidi__V1__Change *e = tu_change(a, r2, cid, tu_now_hlc());
		tu_set(a, e, 31, tu_text(a, k ? "UNIT-SECRET-B" : "UNIT-SECRET-A"), 0, NULL);
		tu_push1(s, forms, k ? phone2 : phone, cid++, e);
	}
	CHECK_EQ_INT(status_history(s, forms, r2, false, &j, NULL, 0), 0);
	json_t *h = json_object_get(j, "history"), *last = json_array_get(h, json_array_size(h) - 1);
	json_t *fw = json_array_get(json_object_get(last, "fields"), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(fw, "field")), 31);
	CHECK_EQ_STR(json_string_value(json_object_get(fw, "name")), "survivor_name");
	CHECK_EQ_STR(json_string_value(json_object_get(fw, "label")), "Name");
	CHECK(!json_object_get(fw, "value"));
	CHECK_EQ_STR(json_string_value(json_object_get(fw, "withheld")), "sensitive");
	CHECK(json_string_length(json_object_get(last, "hash")) == 64);
	{
		char *dump = json_dumps(j, 0);
		CHECK(dump && !strstr(dump, "UNIT-SECRET"));
		free(dump);
	}
	json_decref(j);
	CHECK_EQ_INT(status_history(s, forms, r2, true, &j, NULL, 0), 0);
	h = json_object_get(j, "history");
	fw = json_array_get(json_object_get(json_array_get(h, json_array_size(h) - 1), "fields"), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(fw, "value")), "UNIT-SECRET-B");
	CHECK(!json_object_get(fw, "withheld"));
	json_decref(j);

	fprintf(stderr, "-- the conflicts list, with and without sensitive values\n");
	for (int with = 0; with < 2; with++) {
		struct scope all = scope_all();
		CHECK_EQ_INT(status_conflicts(s, forms, &all, with, &j), 0);
		json_t *recs = json_object_get(j, "records"), *rec = NULL, *c = NULL;
		char rid2[UUID_STR_LEN + 1];
		size_t k;
		uuid_fmt(r2, rid2);
		json_array_foreach(recs, k, rec)
			if (!strcmp(json_string_value(json_object_get(rec, "record_id")), rid2))
				break;
		CHECK(rec);
		CHECK(json_integer_value(json_object_get(j, "open_conflicts")) >= 1);
		json_array_foreach(json_object_get(rec, "conflicts"), k, c)
			if (json_integer_value(json_object_get(c, "number")) == 31)
				break;
		CHECK(c && json_array_size(json_object_get(c, "values")) >= 2);
		json_t *v0 = json_array_get(json_object_get(c, "values"), 0);
		CHECK(json_object_get(v0, "device") && json_object_get(v0, "stamp"));
		char *dump = json_dumps(j, 0);
		CHECK(dump && !strstr(dump, "UNIT-SECRET") == !with);
		free(dump);
		if (with) {
			CHECK(json_object_get(v0, "value") && json_object_get(v0, "text"));
			CHECK(!json_object_get(c, "withheld"));
		} else {
			CHECK(!json_object_get(v0, "value") && !json_object_get(v0, "text"));
			CHECK_EQ_STR(json_string_value(json_object_get(c, "withheld")), "sensitive");
			CHECK_EQ_STR(json_string_value(json_object_get(v0, "withheld")), "sensitive");
		}
		json_decref(j);
	}

	fprintf(stderr, "-- the counts: a deleted record, a conflict and its writers\n");
	{
		Shahidi__V1__Change *d = tu_change(a, r1, cid, tu_now_hlc());
		tu_delete(a, d, true, 0, NULL); /* it saw its own device's writes */
		tu_push1(s, forms, phone, cid++, d);
		o.scope = scope_all();
		CHECK_EQ_INT(status_collect(s, forms, &o, &j), 0);
		server = json_object_get(j, "server");
		CHECK_EQ_INT(json_integer_value(json_object_get(server, "records")), 2);
		CHECK_EQ_INT(json_integer_value(json_object_get(server, "deleted")), 1);
		CHECK_EQ_INT(json_integer_value(json_object_get(server, "open_conflicts")), 1);
		int rows = 0;
		json_array_foreach(json_object_get(server, "records_by_form_and_county"), i, row) {
			const char *cc = json_string_value(json_object_get(row, "county"));
			CHECK_EQ_STR(json_string_value(json_object_get(row, "form_id")), "incident_report");
			CHECK_EQ_INT(json_integer_value(json_object_get(row, "records")), 1);
			CHECK_EQ_INT(json_integer_value(json_object_get(row, "deleted")), !strcmp(cc, c1));
			rows++;
		}
		CHECK_EQ_INT(rows, 2);
		char hex1[17], hex2[17];
		sh_device_fmt(phone, hex1);
		sh_device_fmt(phone2, hex2);
		int writers = 0;
		json_array_foreach(json_object_get(j, "devices"), i, row) {
			const char *id = json_string_value(json_object_get(row, "id"));
			if (!strcmp(id, hex1) || !strcmp(id, hex2)) {
				CHECK_EQ_INT(json_integer_value(json_object_get(row, "open_conflicts")), 1);
				writers++;
			}
		}
		CHECK_EQ_INT(writers, 2);
		json_decref(j);
	}

	fprintf(stderr, "-- an edited county counts, the report's other fields still from its change\n");
	{
		/* r2 keeps its first change in the log (format 8) and stores
		 * its edits: now its county too, moved to c1 */
		Shahidi__V1__Change *e = tu_change(a, r2, cid, tu_now_hlc());
		tu_set(a, e, 53, tu_choice(a, c1), 0, NULL);
		tu_push1(s, forms, phone2, cid++, e);
		CHECK_EQ_INT(status_collect(s, forms, &o, &j), 0);
		server = json_object_get(j, "server");
		int rows = 0;
		json_array_foreach(json_object_get(server, "records_by_form_and_county"), i, row) {
			CHECK_EQ_STR(json_string_value(json_object_get(row, "county")), c1);
			CHECK_EQ_INT(json_integer_value(json_object_get(row, "records")), 2);
			rows++;
		}
		CHECK_EQ_INT(rows, 1);
		json_decref(j);
	}

	fprintf(stderr, "-- the audit log\n");
	char actor[64];
	audit_cli_actor(actor);
	CHECK(!strncmp(actor, "cli:", 4));
	CHECK_EQ_INT(audit_record(s, actor, "export", json_pack("{s:s}", "export_id", "x1")), 0);
	CHECK_EQ_INT(audit_record(s, "device:00000000000000aa", "assign", NULL), 0);
	{
		struct store_txn *t;
		uint64_t seq = 0;
		char *e;
		json_error_t je;
		CHECK_EQ_INT(store_begin(s, false, &t), 0);
		CHECK_EQ_INT(store_audit_next(t, a, &seq, &e), 1);
		json_t *x = json_loads(e, 0, &je);
		CHECK(x);
		CHECK_EQ_STR(json_string_value(json_object_get(x, "action")), "export");
		CHECK_EQ_STR(json_string_value(json_object_get(x, "actor")), actor);
		CHECK_EQ_STR(json_string_value(json_object_get(x, "export_id")), "x1");
		CHECK(json_object_get(x, "time"));
		json_decref(x);
		CHECK_EQ_INT(store_audit_next(t, a, &seq, &e), 1);
		CHECK(strstr(e, "\"action\":\"assign\"") && strstr(e, "device:00000000000000aa"));
		CHECK_EQ_INT(store_audit_next(t, a, &seq, &e), 0);
		store_abort(t);
	}

	buf_free(&body);
	arena_free(a);
	form_registry_free(forms);
	store_close(s);
	tu_rmrf(dir);
	return 0;
}
