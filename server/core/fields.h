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
};

#endif
