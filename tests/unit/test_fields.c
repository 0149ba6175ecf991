/* The field numbers written by hand (fields.h) are the ones the .proto
 * files give, by name: checked against protobuf-c's descriptors. */
#include <protobuf-c/protobuf-c.h>

#include "check.h"
#include "fields.h"
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
	CHECK_EQ_INT(d->n_fields, 10); /* a new field gets its constant too */
}

int main(void)
{
	RUN(test_log_entry);
	return 0;
}
