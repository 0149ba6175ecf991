/* The field numbers written by hand (fields.h) are the ones the .proto
 * files give, by name: checked against protobuf-c's descriptors. */
#include <protobuf-c/protobuf-c.h>

#include "check.h"
#include "fields.h"
#include "form.h"
#include "shahidi.pb-c.h"
#include "store.pb-c.h"

static void check_field(const ProtobufCMessageDescriptor *d, const char *name, unsigned number,
			ProtobufCType type)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
	if (!f || f->id != number || f->type != type) {
		fprintf(stderr, "%s.%s: fields.h says %u, the .proto %d\n", d->name, name, number,
			f ? (int)f->id : -1);
		exit(1);
	}
}

static void test_log_entry(void)
{
	const ProtobufCMessageDescriptor *d = &shahidi__store__v1__log_entry__descriptor;
	check_field(d, "received_ms", LOG_ENTRY_RECEIVED_MS, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "device", LOG_ENTRY_DEVICE, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "batch_seq", LOG_ENTRY_BATCH_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "record_seq", LOG_ENTRY_RECORD_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "change", LOG_ENTRY_CHANGE, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "stored_hlc", LOG_ENTRY_STORED_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "change_digest", LOG_ENTRY_CHANGE_DIGEST, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "hash", LOG_ENTRY_HASH, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "prev_log_seq", LOG_ENTRY_PREV_LOG_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "erased", LOG_ENTRY_ERASED, PROTOBUF_C_TYPE_BOOL);
	check_field(d, "change_zstd", LOG_ENTRY_CHANGE_ZSTD, PROTOBUF_C_TYPE_BYTES);
	CHECK_EQ_INT(d->n_fields, 11); /* a new field gets its constant too */
}

static void test_record(void)
{
	const ProtobufCMessageDescriptor *d = &shahidi__store__v1__record__descriptor;
	check_field(d, "record_id", RECORD_RECORD_ID, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "form_id", RECORD_FORM_ID, PROTOBUF_C_TYPE_STRING);
	check_field(d, "form_version", RECORD_FORM_VERSION, PROTOBUF_C_TYPE_UINT32);
	check_field(d, "base_device", RECORD_BASE_DEVICE, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "base_hlc", RECORD_BASE_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "registers", RECORD_REGISTERS, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "writers", RECORD_WRITERS, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "assigned", RECORD_ASSIGNED, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "conflicts", RECORD_CONFLICTS, PROTOBUF_C_TYPE_UINT32);
	check_field(d, "delete_conflict", RECORD_DELETE_CONFLICT, PROTOBUF_C_TYPE_BOOL);
	check_field(d, "first_received_ms", RECORD_FIRST_RECEIVED_MS, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "last_changed_ms", RECORD_LAST_CHANGED_MS, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "changes", RECORD_CHANGES, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "seq", RECORD_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "log_seq", RECORD_LOG_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "head_log_seq", RECORD_HEAD_LOG_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "base_seq", RECORD_BASE_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "erased_ms", RECORD_ERASED_MS, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "base_log_seq", RECORD_BASE_LOG_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "base_origin", RECORD_BASE_ORIGIN, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "base_change_id", RECORD_BASE_CHANGE_ID, PROTOBUF_C_TYPE_UINT64);
	CHECK_EQ_INT(d->n_fields, 21);
}

static void test_register_entry_stamp(void)
{
	const ProtobufCMessageDescriptor *d = &shahidi__store__v1__register__descriptor;
	check_field(d, "field", REGISTER_FIELD, PROTOBUF_C_TYPE_UINT32);
	check_field(d, "entries", REGISTER_ENTRIES, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "tombstones", REGISTER_TOMBSTONES, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "instance", REGISTER_INSTANCE, PROTOBUF_C_TYPE_BYTES);
	CHECK_EQ_INT(d->n_fields, 4);
	d = &shahidi__store__v1__entry__descriptor;
	check_field(d, "device", ENTRY_DEVICE, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "hlc", ENTRY_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "orig_hlc", ENTRY_ORIG_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "dead", ENTRY_DEAD, PROTOBUF_C_TYPE_BOOL);
	check_field(d, "value", ENTRY_VALUE, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "pending", ENTRY_PENDING, PROTOBUF_C_TYPE_BOOL);
	check_field(d, "seq", ENTRY_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "seen", ENTRY_SEEN, PROTOBUF_C_TYPE_MESSAGE);
	CHECK_EQ_INT(d->n_fields, 8);
	d = &shahidi__store__v1__stamp__descriptor;
	check_field(d, "hlc", STAMP_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "device", STAMP_DEVICE, PROTOBUF_C_TYPE_FIXED64);
	CHECK_EQ_INT(d->n_fields, 2);
}

static void test_change(void)
{
	const ProtobufCMessageDescriptor *d = &shahidi__v1__change__descriptor;
	check_field(d, "change_id", CHANGE_CHANGE_ID, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "record_id", CHANGE_RECORD_ID, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "form_id", CHANGE_FORM_ID, PROTOBUF_C_TYPE_STRING);
	check_field(d, "form_version", CHANGE_FORM_VERSION, PROTOBUF_C_TYPE_UINT32);
	check_field(d, "hlc", CHANGE_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "origin", CHANGE_ORIGIN, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "create", CHANGE_CREATE, PROTOBUF_C_TYPE_BOOL);
	check_field(d, "fields", CHANGE_FIELDS, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "deletion", CHANGE_DELETION, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "erased", CHANGE_ERASED, PROTOBUF_C_TYPE_BOOL);
	CHECK_EQ_INT(d->n_fields, 10);
	d = &shahidi__v1__field_write__descriptor;
	check_field(d, "field", FIELD_WRITE_FIELD, PROTOBUF_C_TYPE_UINT32);
	check_field(d, "value", FIELD_WRITE_VALUE, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "hlc", FIELD_WRITE_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "supersedes", FIELD_WRITE_SUPERSEDES, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "instance", FIELD_WRITE_INSTANCE, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "seen", FIELD_WRITE_SEEN, PROTOBUF_C_TYPE_MESSAGE);
	CHECK_EQ_INT(d->n_fields, 6);
	d = &shahidi__v1__deletion__descriptor;
	check_field(d, "deleted", DELETION_DELETED, PROTOBUF_C_TYPE_BOOL);
	check_field(d, "hlc", DELETION_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "supersedes", DELETION_SUPERSEDES, PROTOBUF_C_TYPE_MESSAGE);
	check_field(d, "seen", DELETION_SEEN, PROTOBUF_C_TYPE_MESSAGE);
	CHECK_EQ_INT(d->n_fields, 4);
	d = &shahidi__v1__stamp__descriptor;
	check_field(d, "hlc", STAMP_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "device", STAMP_DEVICE, PROTOBUF_C_TYPE_FIXED64);
	CHECK_EQ_INT(d->n_fields, 2);
	d = &shahidi__v1__push_batch__descriptor;
	check_field(d, "device", PUSH_BATCH_DEVICE, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "batch_seq", PUSH_BATCH_BATCH_SEQ, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "app_version", PUSH_BATCH_APP_VERSION, PROTOBUF_C_TYPE_STRING);
	check_field(d, "unsent", PUSH_BATCH_UNSENT, PROTOBUF_C_TYPE_UINT32);
	check_field(d, "sent_hlc", PUSH_BATCH_SENT_HLC, PROTOBUF_C_TYPE_FIXED64);
	check_field(d, "changes", PUSH_BATCH_CHANGES, PROTOBUF_C_TYPE_MESSAGE);
	CHECK_EQ_INT(d->n_fields, 6);
}

/* Value's members by kind, and the messages nested in a value. */
static void test_value(void)
{
	static const struct {
		const char *name;
		enum form_type kind;
		ProtobufCType type;
	} members[] = {
		{"text", FT_TEXT, PROTOBUF_C_TYPE_STRING},
		{"integer", FT_INTEGER, PROTOBUF_C_TYPE_SINT64},
		{"decimal", FT_DECIMAL, PROTOBUF_C_TYPE_DOUBLE},
		{"boolean", FT_BOOLEAN, PROTOBUF_C_TYPE_BOOL},
		{"date", FT_DATE, PROTOBUF_C_TYPE_STRING},
		{"datetime", FT_DATETIME, PROTOBUF_C_TYPE_SINT64},
		{"choice", FT_CHOICE, PROTOBUF_C_TYPE_STRING},
		{"choices", FT_CHOICES, PROTOBUF_C_TYPE_MESSAGE},
		{"geopoint", FT_GEOPOINT, PROTOBUF_C_TYPE_MESSAGE},
		{"attachment", FT_ATTACHMENT, PROTOBUF_C_TYPE_MESSAGE},
		{"sealed", FT_SEALED, PROTOBUF_C_TYPE_MESSAGE},
		{"link", FT_LINK, PROTOBUF_C_TYPE_BYTES},
	};
	const ProtobufCMessageDescriptor *d = &shahidi__v1__value__descriptor;
	for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
		check_field(d, members[i].name, (unsigned)members[i].kind, members[i].type);
	CHECK_EQ_INT(d->n_fields, 12);
	d = &shahidi__v1__choices__descriptor;
	check_field(d, "codes", CHOICES_CODES, PROTOBUF_C_TYPE_STRING);
	CHECK_EQ_INT(d->n_fields, 1);
	d = &shahidi__v1__geo_point__descriptor;
	check_field(d, "latitude", GEO_POINT_LATITUDE, PROTOBUF_C_TYPE_DOUBLE);
	check_field(d, "longitude", GEO_POINT_LONGITUDE, PROTOBUF_C_TYPE_DOUBLE);
	check_field(d, "altitude", GEO_POINT_ALTITUDE, PROTOBUF_C_TYPE_DOUBLE);
	check_field(d, "accuracy", GEO_POINT_ACCURACY, PROTOBUF_C_TYPE_DOUBLE);
	CHECK_EQ_INT(d->n_fields, 4);
	d = &shahidi__v1__attachment__descriptor;
	check_field(d, "file_id", ATTACHMENT_FILE_ID, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "sha256", ATTACHMENT_SHA256, PROTOBUF_C_TYPE_BYTES);
	check_field(d, "size", ATTACHMENT_SIZE, PROTOBUF_C_TYPE_UINT64);
	check_field(d, "media_type", ATTACHMENT_MEDIA_TYPE, PROTOBUF_C_TYPE_STRING);
	CHECK_EQ_INT(d->n_fields, 4);
}

int main(void)
{
	RUN(test_value);
	RUN(test_log_entry);
	RUN(test_record);
	RUN(test_register_entry_stamp);
	RUN(test_change);
	return 0;
}
