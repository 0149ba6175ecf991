/* The office's actions, as the server's routes and the CLI both call
 * them: who may do what (county scopes, roles), what each refusal says,
 * that a refusal writes nothing, and that every action is audited. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "common.h"
#include "office_api.h"
#include "render.h"
#include "store.h"
#include "testutil.h"

static struct store *S;
static struct form_registry *FORMS;

/* The audit log, one JSON object a line. */
static void audit_log(struct buf *out)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	uint64_t seq = 0;
	char *j;
	int r;
	buf_reset(out);
	CHECK(a && store_begin(S, false, &t) == 0);
	while ((r = store_audit_next(t, a, &seq, &j)) == 1) {
		buf_puts(out, j);
		buf_puts(out, "\n");
		arena_reset(a);
	}
	CHECK_EQ_INT(r, 0);
	store_abort(t);
	arena_free(a);
}

static size_t count(const struct buf *b, const char *needle)
{
	size_t n = 0;
	struct buf z = {0};
	buf_append(&z, b->data, b->len);
	buf_putc(&z, 0);
	for (const char *p = (const char *)z.data; z.data && (p = strstr(p, needle)); p++)
		n++;
	buf_free(&z);
	return n;
}

static struct store_txn *wbegin(void)
{
	struct store_txn *t;
	CHECK_EQ_INT(store_begin(S, true, &t), 0);
	return t;
}

static uint64_t enrol(const char *name, const char *county, uint32_t role)
{
	struct office_actor cli;
	struct office_verdict v = {{0}};
	struct auth_enrol e = {name, county, role};
	char token[AUTH_TOKEN_LEN + 1];
	uint64_t id = 0;
	office_api_actor_cli(&cli);
	struct store_txn *t = wbegin();
	CHECK_EQ_INT(office_api_enrol(t, &cli, &e, sh_now_ms(), &id, token, &v), 0);
	CHECK_EQ_INT(store_commit(t), 0);
	CHECK(id && !strncmp(token, "shd_", 4));
	return id;
}

static void actor(uint64_t device, struct office_actor *ret)
{
	struct store_txn *t = wbegin();
	CHECK_EQ_INT(office_api_actor_device(t, device, ret), 0);
	store_abort(t);
}

int main(void)
{
	char dir[256], county[4] = "", other[4];
	struct buf body = {0}, log = {0};
	struct arena *a = arena_new();
	struct office_verdict v;
	struct tu_state before, after;
	tu_tmpdir(dir);
	S = tu_store_open(dir, NULL);
	FORMS = tu_forms(false);

	fprintf(stderr, "-- enrolment, audited; a bad one refused\n");
	uint64_t phone = enrol("phone A", "042", ROLE_DEVICE);
	audit_log(&log);
	CHECK_EQ_INT(count(&log, "\"action\":\"enrol\""), 1);
	CHECK(count(&log, "\"actor\":\"cli:") == 1);
	{
		struct office_actor cli;
		struct auth_enrol e = {"bad", "099", ROLE_DEVICE};
		char token[AUTH_TOKEN_LEN + 1];
		uint64_t id = 0;
		office_api_actor_cli(&cli);
		memset(&v, 0, sizeof(v));
		struct store_txn *t = wbegin();
		CHECK_EQ_INT(office_api_enrol(t, &cli, &e, sh_now_ms(), &id, token, &v), -EINVAL);
		CHECK_EQ_STR(v.code, "bad_request");
		CHECK(strstr(v.msg, "county"));
		store_abort(t);
	}

	fprintf(stderr, "-- a report, and coordinators in and out of its county\n");
	Shahidi__V1__Change *ch = tu_report(a, FORMS, 7, 1, tu_now_hlc());
	uint8_t rid[16];
	memcpy(rid, ch->record_id.data, 16);
	tu_batch(&body, phone, 1, &ch, 1, CODEC_IDENTITY);
	CHECK_EQ_INT(tu_push(S, FORMS, &body, NULL, NULL), 0);
	{
		struct store_txn *t;
		merge_rec_t *rec;
		CHECK_EQ_INT(store_begin(S, false, &t), 0);
		CHECK_EQ_INT(store_record_get(t, a, rid, &rec), 0);
		render_record_county(rec, form_registry_find(FORMS, rec->form_id, rec->form_version),
				     county);
		store_abort(t);
	}
	CHECK(scope_county_number(county) > 0);
	snprintf(other, sizeof(other), "%s", strcmp(county, "001") ? "001" : "002");
	uint64_t in = enrol("coordinator in", county, ROLE_COORDINATOR);
	uint64_t out = enrol("coordinator out", other, ROLE_COORDINATOR);
	uint64_t phone_in = enrol("phone in", county, ROLE_DEVICE);
	uint64_t phone_out = enrol("phone out", other, ROLE_DEVICE);
	struct office_actor ain, aout;
	actor(in, &ain);
	actor(out, &aout);
	CHECK(!strncmp(ain.name, "device:", 7));

	fprintf(stderr, "-- a phone is no actor\n");
	{
		struct office_actor x;
		struct store_txn *t = wbegin();
		CHECK_EQ_INT(office_api_actor_device(t, phone, &x), -EPERM);
		CHECK_EQ_INT(office_api_actor_device(t, 12345, &x), -ENOENT);
		store_abort(t);
	}

	fprintf(stderr, "-- assign: out of scope looks absent, and writes nothing\n");
	tu_state(S, &before);
	audit_log(&log);
	size_t entries = count(&log, "\n");
	{
		struct store_txn *t = wbegin();
		memset(&v, 0, sizeof(v));
		CHECK_EQ_INT(office_api_assign(t, FORMS, &aout, rid, phone_out, &v), -ENOENT);
		CHECK_EQ_STR(v.code, "no_such_record");
		memset(&v, 0, sizeof(v));
		/* a phone of another county, a coordinator, nobody */
		CHECK_EQ_INT(office_api_assign(t, FORMS, &ain, rid, phone_out, &v), -ENOENT);
		CHECK_EQ_STR(v.code, "no_such_device");
		CHECK_EQ_INT(office_api_assign(t, FORMS, &ain, rid, in, &v), -ENOENT);
		CHECK_EQ_INT(office_api_assign(t, FORMS, &ain, rid, 999, &v), -ENOENT);
		CHECK_EQ_INT(store_commit(t), 0);
	}
	tu_state(S, &after);
	CHECK(tu_state_eq(&before, &after));
	audit_log(&log);
	CHECK_EQ_INT(count(&log, "\n"), entries);
	{
		struct store_txn *t = wbegin();
		memset(&v, 0, sizeof(v));
		CHECK_EQ_INT(office_api_assign(t, FORMS, &ain, rid, phone_in, &v), 0);
		CHECK_EQ_INT(store_commit(t), 0);
	}
	audit_log(&log);
	CHECK_EQ_INT(count(&log, "\"action\":\"assign\""), 1);

	fprintf(stderr, "-- resolve: refusals, each with its code\n");
	{
		struct office_resolve q = {.how = RESOLVE_TAKE, .field_name = "no_such_field",
					   .take_device = phone};
		uint64_t log_seq = 0;
		memcpy(q.record_id, rid, 16);
		struct store_txn *t = wbegin();
		memset(&v, 0, sizeof(v));
		CHECK_EQ_INT(office_api_resolve(t, FORMS, &aout, &q, sh_now_ms(), &log_seq, &v), -ENOENT);
		CHECK_EQ_STR(v.code, "no_such_record");
		CHECK_EQ_INT(office_api_resolve(t, FORMS, &ain, &q, sh_now_ms(), &log_seq, &v), -EINVAL);
		CHECK_EQ_STR(v.code, "unknown_field");
		/* a field with no conflict */
		q.field_name = "risk_level";
		CHECK_EQ_INT(office_api_resolve(t, FORMS, &ain, &q, sh_now_ms(), &log_seq, &v),
			     -EALREADY);
		CHECK_EQ_STR(v.code, "cannot_resolve");
		CHECK(strstr(v.msg, "no_conflict"));
		/* a value of the wrong type */
		q.how = RESOLVE_VALUE;
		q.value = json_integer(5);
		CHECK_EQ_INT(office_api_resolve(t, FORMS, &ain, &q, sh_now_ms(), &log_seq, &v), -EINVAL);
		CHECK_EQ_STR(v.code, "wrong_type");
		json_decref(q.value);
		store_abort(t);
	}

	fprintf(stderr, "-- revoke, audited\n");
	{
		struct office_actor cli;
		office_api_actor_cli(&cli);
		struct store_txn *t = wbegin();
		memset(&v, 0, sizeof(v));
		CHECK_EQ_INT(office_api_revoke(t, &cli, 999, sh_now_ms(), &v), -ENOENT);
		CHECK_EQ_STR(v.code, "no_such_device");
		CHECK_EQ_INT(office_api_revoke(t, &cli, phone_in, sh_now_ms(), &v), 0);
		/* a revoked phone cannot be assigned */
		CHECK_EQ_INT(office_api_assign(t, FORMS, &ain, rid, phone_in, &v), -ENOENT);
		CHECK_EQ_STR(v.code, "no_such_device");
		CHECK_EQ_INT(store_commit(t), 0);
	}
	audit_log(&log);
	CHECK_EQ_INT(count(&log, "\"action\":\"revoke\""), 1);

	fprintf(stderr, "-- export entries\n");
	{
		const char *cs[] = {"042", "047"};
		struct export_opts o = {.format = EXPORT_NDJSON, .counties = cs, .n_counties = 2,
					.include_deleted = true};
		json_t *start = office_api_export_start_entry("00000000000000ab", &o);
		json_t *end = office_api_export_end_entry("00000000000000ab", 12, "complete");
		CHECK(start && end);
		CHECK_EQ_STR(json_string_value(json_object_get(start, "format")), "ndjson");
		CHECK_EQ_STR(json_string_value(json_object_get(start, "form")), "incident_report");
		CHECK_EQ_INT(json_array_size(json_object_get(start, "counties")), 2);
		CHECK(json_is_true(json_object_get(start, "include_deleted")));
		CHECK_EQ_INT(json_integer_value(json_object_get(end, "records")), 12);
		struct store_txn *t = wbegin();
		CHECK_EQ_INT(office_api_export_audit(t, &ain, false, start), 0);
		CHECK_EQ_INT(office_api_export_audit(t, &ain, true, end), 0);
		CHECK_EQ_INT(store_commit(t), 0);
		json_decref(start);
		json_decref(end);
	}
	audit_log(&log);
	CHECK_EQ_INT(count(&log, "\"action\":\"export\""), 1);
	CHECK_EQ_INT(count(&log, "\"action\":\"export_end\""), 1);
	CHECK(count(&log, ain.name) >= 2);

	buf_free(&body);
	buf_free(&log);
	arena_free(a);
	form_registry_free(FORMS);
	store_close(S);
	tu_rmrf(dir);
	return 0;
}
