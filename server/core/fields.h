/* fields: the field numbers of the stored and wire messages
 * (proto/store.proto, proto/shahidi.proto) for the code that reads or
 * writes their bytes by hand (codec_pb_next, codec_put_*), so that a
 * number is written once, by the name the .proto gives it. unit.fields
 * checks every constant here against protobuf-c's descriptors: a .proto
 * change that moves a field fails the build's tests, not a store.
 *
 * Add a message's constants here when its bytes are handled by hand.
 */
#ifndef SHAHIDI_FIELDS_H
#define SHAHIDI_FIELDS_H

/* shahidi.store.v1.LogEntry: one change as received, a link of the
 * hash chain (chain.c). */
enum log_entry_field {
	LOG_ENTRY_RECEIVED_MS = 1,
	LOG_ENTRY_DEVICE = 2,
	LOG_ENTRY_BATCH_SEQ = 3,
	LOG_ENTRY_RECORD_SEQ = 4,
	LOG_ENTRY_CHANGE = 5,
	LOG_ENTRY_STORED_HLC = 6,
	LOG_ENTRY_CHANGE_DIGEST = 7,
	LOG_ENTRY_HASH = 8,
	LOG_ENTRY_PREV_LOG_SEQ = 9,
	LOG_ENTRY_ERASED = 10,
	LOG_ENTRY_CHANGE_ZSTD = 11,
};

/* shahidi.store.v1.Record: a merged report (recpack.c packs and reads it;
 * export reads it through recpack_view()). */
enum record_field {
	RECORD_RECORD_ID = 1,
	RECORD_FORM_ID = 2,
	RECORD_FORM_VERSION = 3,
	RECORD_BASE_DEVICE = 4,
	RECORD_BASE_HLC = 5,
	RECORD_REGISTERS = 6,
	RECORD_WRITERS = 7,
	RECORD_ASSIGNED = 8,
	RECORD_CONFLICTS = 9,
	RECORD_DELETE_CONFLICT = 10,
	RECORD_FIRST_RECEIVED_MS = 11,
	RECORD_LAST_CHANGED_MS = 12,
	RECORD_CHANGES = 13,
	RECORD_SEQ = 14,
	RECORD_LOG_SEQ = 15,
	RECORD_HEAD_LOG_SEQ = 16,
	RECORD_BASE_SEQ = 17,
	RECORD_ERASED_MS = 18,
	RECORD_BASE_LOG_SEQ = 19,
	RECORD_BASE_ORIGIN = 20,
	RECORD_BASE_CHANGE_ID = 21,
};

/* shahidi.store.v1.Register: one field's (or one instance field's) values. */
enum register_field {
	REGISTER_FIELD = 1,
	REGISTER_ENTRIES = 2,
	REGISTER_TOMBSTONES = 3,
	REGISTER_INSTANCE = 4,
};

/* shahidi.store.v1.Entry: one device's latest write to a register. */
enum entry_field {
	ENTRY_DEVICE = 1,
	ENTRY_HLC = 2,
	ENTRY_ORIG_HLC = 3,
	ENTRY_DEAD = 4,
	ENTRY_VALUE = 5,
	ENTRY_PENDING = 7,
	ENTRY_SEQ = 8,
	ENTRY_SEEN = 9,
};

/* shahidi.store.v1.Stamp. */
enum stamp_field {
	STAMP_HLC = 1,
	STAMP_DEVICE = 2,
};

/* shahidi.v1.Change: one edit of one report, as a phone sends it (wire.c
 * reads it; a pointer record's values are read from it in the log). */
enum change_field {
	CHANGE_CHANGE_ID = 1,
	CHANGE_RECORD_ID = 2,
	CHANGE_FORM_ID = 3,
	CHANGE_FORM_VERSION = 4,
	CHANGE_HLC = 5,
	CHANGE_ORIGIN = 6,
	CHANGE_CREATE = 7,
	CHANGE_FIELDS = 8,
	CHANGE_DELETION = 9,
	CHANGE_ERASED = 10,
};

/* shahidi.v1.FieldWrite: one field's new value within a change. */
enum field_write_field {
	FIELD_WRITE_FIELD = 1,
	FIELD_WRITE_VALUE = 2,
	FIELD_WRITE_HLC = 3,
	FIELD_WRITE_SUPERSEDES = 4,
	FIELD_WRITE_INSTANCE = 5,
	FIELD_WRITE_SEEN = 6,
};

/* shahidi.v1.Deletion: a change's deletion (or undeletion) of its record. */
enum deletion_field {
	DELETION_DELETED = 1,
	DELETION_HLC = 2,
	DELETION_SUPERSEDES = 3,
	DELETION_SEEN = 4,
};

/* shahidi.v1.Stamp has the numbers of shahidi.store.v1.Stamp (STAMP_*). */

/* shahidi.v1.PushBatch: what a phone sends (sync.c reads it). */
enum push_batch_field {
	PUSH_BATCH_DEVICE = 1,
	PUSH_BATCH_BATCH_SEQ = 2,
	PUSH_BATCH_APP_VERSION = 3,
	PUSH_BATCH_UNSENT = 4,
	PUSH_BATCH_SENT_HLC = 5,
	PUSH_BATCH_CHANGES = 6,
};

/* shahidi.v1.Value's members are numbered as enum form_type (form.h: the
 * member's number is its kind); unit.fields checks that too. Its nested
 * messages, read where a value is checked (form.c) and where an
 * attachment is tied to its record (upload.c): */
enum choices_field {
	CHOICES_CODES = 1,
};
enum geo_point_field {
	GEO_POINT_LATITUDE = 1,
	GEO_POINT_LONGITUDE = 2,
	GEO_POINT_ALTITUDE = 3,
	GEO_POINT_ACCURACY = 4,
};
enum attachment_field {
	ATTACHMENT_FILE_ID = 1,
	ATTACHMENT_SHA256 = 2,
	ATTACHMENT_SIZE = 3,
	ATTACHMENT_MEDIA_TYPE = 4,
};

#endif
