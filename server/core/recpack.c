#include "recpack.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#include "arena.h"
#include "codec.h"
#include "fields.h"

/* ---- unpacking ---- */

/* Counts the occurrences of field number, checking that every field of
 * the message is one we know with its wire type (known: a bit per field
 * number, wt: each one's wire type). 0 when something else is there. */
static int scan(const uint8_t *p, size_t n, uint32_t known, const uint8_t *wt, uint32_t number,
		size_t *ret_count)
{
	struct pb_field f;
	size_t pos = 0, count = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number >= 32 || !(known & (1u << f.number)) || f.wire_type != wt[f.number])
			return 0;
		count += f.number == number;
	}
	*ret_count = count;
	return r < 0 ? -1 : 1;
}

/* Each message's fields we know (a bit per field number) and their wire
 * types, by fields.h's names. */
#define BIT(f) (1u << (f))
static const uint8_t entry_wt[ENTRY_SEEN + 1] = {
	[ENTRY_DEVICE] = 1, [ENTRY_HLC] = 1,	 [ENTRY_ORIG_HLC] = 1, [ENTRY_DEAD] = 0,
	[ENTRY_VALUE] = 2,  [ENTRY_PENDING] = 0, [ENTRY_SEQ] = 0,      [ENTRY_SEEN] = 2};
#define ENTRY_KNOWN                                                                            \
	(BIT(ENTRY_DEVICE) | BIT(ENTRY_HLC) | BIT(ENTRY_ORIG_HLC) | BIT(ENTRY_DEAD) |          \
	 BIT(ENTRY_VALUE) | BIT(ENTRY_PENDING) | BIT(ENTRY_SEQ) | BIT(ENTRY_SEEN))
static const uint8_t reg_wt[REGISTER_INSTANCE + 1] = {
	[REGISTER_FIELD] = 0, [REGISTER_ENTRIES] = 2, [REGISTER_TOMBSTONES] = 2,
	[REGISTER_INSTANCE] = 2};
#define REG_KNOWN                                                                              \
	(BIT(REGISTER_FIELD) | BIT(REGISTER_ENTRIES) | BIT(REGISTER_TOMBSTONES) |              \
	 BIT(REGISTER_INSTANCE))
static const uint8_t stamp_wt[STAMP_DEVICE + 1] = {[STAMP_HLC] = 1, [STAMP_DEVICE] = 1};
#define STAMP_KNOWN (BIT(STAMP_HLC) | BIT(STAMP_DEVICE))
/* Record: fields 1 to RECORD_BASE_CHANGE_ID, every one known; length-delimited
 * the id, form, registers and the two packed arrays, fixed64 the base
 * stamp, varints the rest. */
static const uint8_t rec_wt[RECORD_BASE_CHANGE_ID + 1] = {
	[RECORD_RECORD_ID] = 2,	      [RECORD_FORM_ID] = 2,	    [RECORD_FORM_VERSION] = 0,
	[RECORD_BASE_DEVICE] = 1,     [RECORD_BASE_HLC] = 1,	    [RECORD_REGISTERS] = 2,
	[RECORD_WRITERS] = 2,	      [RECORD_ASSIGNED] = 2,	    [RECORD_CONFLICTS] = 0,
	[RECORD_DELETE_CONFLICT] = 0, [RECORD_FIRST_RECEIVED_MS] = 0, [RECORD_LAST_CHANGED_MS] = 0,
	[RECORD_CHANGES] = 0,	      [RECORD_SEQ] = 0,		    [RECORD_LOG_SEQ] = 0,
	[RECORD_HEAD_LOG_SEQ] = 0,    [RECORD_BASE_SEQ] = 0,	    [RECORD_ERASED_MS] = 0,
	[RECORD_BASE_LOG_SEQ] = 0,    [RECORD_BASE_ORIGIN] = 0,	    [RECORD_BASE_CHANGE_ID] = 0};
#define REC_KNOWN ((BIT(RECORD_BASE_CHANGE_ID + 1) - 1) & ~1u) /* 1 to RECORD_BASE_CHANGE_ID */
#define REC_TAIL 11 /* RECORD_FIRST_RECEIVED_MS to RECORD_BASE_CHANGE_ID: varints */
_Static_assert(RECORD_BASE_CHANGE_ID == RECORD_FIRST_RECEIVED_MS + REC_TAIL - 1 &&
		       RECORD_BASE_CHANGE_ID < 32,
	       "the receipt metadata and the base change follow one another (recpack_pack's tail)");

typedef Shahidi__Store__V1__Stamp pb_stamp_t;

/* Reads every Stamp under field number of p into a fresh array. */
static int unpack_stamps(struct arena *a, const uint8_t *p, size_t n, uint32_t number,
			 size_t count, pb_stamp_t ***ret, size_t *ret_n)
{
	static const pb_stamp_t init = SHAHIDI__STORE__V1__STAMP__INIT;
	struct pb_field f, g;
	size_t pos = 0, k = 0, c2;
	*ret = NULL;
	*ret_n = 0;
	if (!count)
		return 1;
	pb_stamp_t *st = arena_alloc(a, count * sizeof(*st));
	pb_stamp_t **sp = arena_alloc(a, count * sizeof(*sp));
	if (!st || !sp)
		return -1;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		if (f.number != number)
			continue;
		int r = scan(f.data, f.len, STAMP_KNOWN, stamp_wt, 0, &c2);
		if (r <= 0)
			return r;
		size_t p2 = 0;
		st[k] = init;
		while (codec_pb_next(f.data, f.len, &p2, &g) > 0) {
			if (g.number == STAMP_HLC)
				st[k].hlc = g.varint;
			else
				st[k].device = g.varint;
		}
		sp[k] = &st[k];
		k++;
	}
	*ret = sp;
	*ret_n = k;
	return 1;
}

/* 1 unpacked, 0 not ours to do (fall back), -1 malformed or no memory.
 * One pass checks and reads (an entry is unpacked for every register of
 * every record the writer touches); a second one only for the stamps a
 * deletion saw. */
static int unpack_entry(struct arena *a, const uint8_t *p, size_t n, merge_entry_t *e)
{
	static const merge_entry_t init = SHAHIDI__STORE__V1__ENTRY__INIT;
	struct pb_field f;
	size_t pos = 0, seen = 0;
	int r;
	*e = init;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number > ENTRY_SEEN || !(ENTRY_KNOWN & BIT(f.number)) ||
		    f.wire_type != entry_wt[f.number])
			return 0;
		switch (f.number) {
		case ENTRY_DEVICE: e->device = f.varint; break;
		case ENTRY_HLC: e->hlc = f.varint; break;
		case ENTRY_ORIG_HLC: e->orig_hlc = f.varint; break;
		case ENTRY_DEAD: e->dead = f.varint != 0; break;
		case ENTRY_VALUE:
			e->value.data = (uint8_t *)f.data;
			e->value.len = f.len;
			break;
		case ENTRY_PENDING: e->pending = f.varint != 0; break;
		case ENTRY_SEQ: e->seq = f.varint; break;
		case ENTRY_SEEN: seen++; break;
		default: break;
		}
	}
	if (r < 0)
		return -1;
	return unpack_stamps(a, p, n, ENTRY_SEEN, seen, &e->seen, &e->n_seen);
}

/* Counts the entries and tombstones of a Register, checking its fields as
 * scan() does. */
static int scan_register(const uint8_t *p, size_t n, size_t *ret_entries, size_t *ret_tombs)
{
	struct pb_field f;
	size_t pos = 0, entries = 0, tombs = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number > REGISTER_INSTANCE || !(REG_KNOWN & BIT(f.number)) ||
		    f.wire_type != reg_wt[f.number])
			return 0;
		entries += f.number == REGISTER_ENTRIES;
		tombs += f.number == REGISTER_TOMBSTONES;
	}
	*ret_entries = entries;
	*ret_tombs = tombs;
	return r < 0 ? -1 : 1;
}

/* unpack_register's way for a register of many entries: counted first. */
static int unpack_register_counted(struct arena *a, const uint8_t *p, size_t n, merge_reg_t *g)
{
	static const merge_reg_t init = SHAHIDI__STORE__V1__REGISTER__INIT;
	struct pb_field f;
	size_t pos = 0, count, n_tombs;
	int r = scan_register(p, n, &count, &n_tombs);
	if (r <= 0)
		return r;
	*g = init;
	if ((r = unpack_stamps(a, p, n, REGISTER_TOMBSTONES, n_tombs, &g->tombstones,
			       &g->n_tombstones)) <= 0)
		return r;
	merge_entry_t *es = arena_alloc(a, (count + 1) * sizeof(*es));
	g->entries = arena_alloc(a, (count + 1) * sizeof(*g->entries));
	if (!es || !g->entries)
		return -1;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		if (f.number == REGISTER_FIELD) {
			g->field = (uint32_t)f.varint;
		} else if (f.number == REGISTER_INSTANCE) {
			g->instance.data = (uint8_t *)f.data;
			g->instance.len = f.len;
		} else if (f.number == REGISTER_ENTRIES) {
			merge_entry_t *e = &es[g->n_entries];
			if ((r = unpack_entry(a, f.data, f.len, e)) <= 0)
				return r;
			g->entries[g->n_entries++] = e;
		}
	}
	return 1;
}

/* A register has one entry, or a few (concurrent values): read in one
 * pass that checks and reads, as unpack_entry does, into a few on the
 * stack; more than that go the counted way. */
#define FEW_ENTRIES 4
static int unpack_register(struct arena *a, const uint8_t *p, size_t n, merge_reg_t *g)
{
	static const merge_reg_t init = SHAHIDI__STORE__V1__REGISTER__INIT;
	merge_entry_t few[FEW_ENTRIES];
	struct pb_field f;
	size_t pos = 0, count = 0, n_tombs = 0;
	int r;
	*g = init;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number > REGISTER_INSTANCE || !(REG_KNOWN & BIT(f.number)) ||
		    f.wire_type != reg_wt[f.number])
			return 0;
		switch (f.number) {
		case REGISTER_FIELD: g->field = (uint32_t)f.varint; break;
		case REGISTER_INSTANCE:
			g->instance.data = (uint8_t *)f.data;
			g->instance.len = f.len;
			break;
		case REGISTER_TOMBSTONES: n_tombs++; break;
		case REGISTER_ENTRIES:
			if (count == FEW_ENTRIES)
				return unpack_register_counted(a, p, n, g);
			if ((r = unpack_entry(a, f.data, f.len, &few[count])) <= 0)
				return r;
			count++;
			break;
		default: break;
		}
	}
	if (r < 0)
		return -1;
	if ((r = unpack_stamps(a, p, n, REGISTER_TOMBSTONES, n_tombs, &g->tombstones,
			       &g->n_tombstones)) <= 0)
		return r;
	merge_entry_t *es = arena_alloc(a, (count + 1) * sizeof(*es));
	g->entries = arena_alloc(a, (count + 1) * sizeof(*g->entries));
	if (!es || !g->entries)
		return -1;
	for (size_t i = 0; i < count; i++) {
		es[i] = few[i];
		g->entries[i] = &es[i];
	}
	g->n_entries = count;
	return 1;
}

/* Appends a packed repeated fixed64 to *arr. */
static void add_fixed64s(uint64_t *arr, size_t *n, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		arr[(*n)++] = le64toh(v);
	}
}

/* 1 unpacked, 0 not ours to do, -1 malformed or no memory. */
static int unpack_record(struct arena *a, const uint8_t *p, size_t n, merge_rec_t **ret)
{
	struct pb_field f;
	size_t pos = 0, n_regs = 0, n_writers = 0, n_assigned = 0;
	int r;
	/* what is there, and how many of each array */
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number > RECORD_BASE_CHANGE_ID || !(REC_KNOWN & BIT(f.number)) ||
		    f.wire_type != rec_wt[f.number])
			return 0;
		if ((f.number == RECORD_WRITERS || f.number == RECORD_ASSIGNED) && f.len % 8)
			return -1;
		n_regs += f.number == RECORD_REGISTERS;
		n_writers += f.number == RECORD_WRITERS ? f.len / 8 : 0;
		n_assigned += f.number == RECORD_ASSIGNED ? f.len / 8 : 0;
	}
	if (r < 0)
		return -1;
	merge_rec_t *rec = arena_alloc(a, sizeof(*rec));
	merge_reg_t *regs = arena_alloc(a, (n_regs + 1) * sizeof(*regs));
	if (!rec || !regs)
		return -1;
	merge_rec_t init = SHAHIDI__STORE__V1__RECORD__INIT;
	*rec = init;
	rec->registers = arena_alloc(a, (n_regs + 1) * sizeof(*rec->registers));
	if (n_writers)
		rec->writers = arena_alloc(a, n_writers * sizeof(*rec->writers));
	if (n_assigned)
		rec->assigned = arena_alloc(a, n_assigned * sizeof(*rec->assigned));
	if (!rec->registers || (n_writers && !rec->writers) || (n_assigned && !rec->assigned))
		return -1;
	pos = 0;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		switch (f.number) {
		case RECORD_RECORD_ID:
			rec->record_id.data = (uint8_t *)f.data;
			rec->record_id.len = f.len;
			break;
		case RECORD_FORM_ID: {
			char *s = arena_alloc(a, f.len + 1);
			if (!s)
				return -1;
			memcpy(s, f.data, f.len);
			s[f.len] = 0;
			rec->form_id = s;
			break;
		}
		case RECORD_FORM_VERSION: rec->form_version = (uint32_t)f.varint; break;
		case RECORD_BASE_DEVICE: rec->base_device = f.varint; break;
		case RECORD_BASE_HLC: rec->base_hlc = f.varint; break;
		case RECORD_REGISTERS: {
			merge_reg_t *g = &regs[rec->n_registers];
			if ((r = unpack_register(a, f.data, f.len, g)) <= 0)
				return r;
			rec->registers[rec->n_registers++] = g;
			break;
		}
		case RECORD_WRITERS: add_fixed64s(rec->writers, &rec->n_writers, f.data, f.len); break;
		case RECORD_ASSIGNED: add_fixed64s(rec->assigned, &rec->n_assigned, f.data, f.len); break;
		case RECORD_CONFLICTS: rec->conflicts = (uint32_t)f.varint; break;
		case RECORD_DELETE_CONFLICT: rec->delete_conflict = f.varint != 0; break;
		case RECORD_FIRST_RECEIVED_MS: rec->first_received_ms = f.varint; break;
		case RECORD_LAST_CHANGED_MS: rec->last_changed_ms = f.varint; break;
		case RECORD_CHANGES: rec->changes = f.varint; break;
		case RECORD_SEQ: rec->seq = f.varint; break;
		case RECORD_LOG_SEQ: rec->log_seq = f.varint; break;
		case RECORD_HEAD_LOG_SEQ: rec->head_log_seq = f.varint; break;
		case RECORD_BASE_SEQ: rec->base_seq = f.varint; break;
		case RECORD_ERASED_MS: rec->erased_ms = f.varint; break;
		case RECORD_BASE_LOG_SEQ: rec->base_log_seq = f.varint; break;
		case RECORD_BASE_ORIGIN: rec->base_origin = f.varint; break;
		case RECORD_BASE_CHANGE_ID: rec->base_change_id = f.varint; break;
		default: break;
		}
	}
	*ret = rec;
	return 1;
}

merge_rec_t *recpack_unpack(struct arena *a, const uint8_t *in, size_t n)
{
	/* A copy: the caller's bytes may be LMDB's, which move when the
	 * record is written back in the same transaction. */
	uint8_t *p = arena_alloc(a, n + 1);
	merge_rec_t *rec;
	if (!p)
		return NULL;
	if (n)
		memcpy(p, in, n);
	if (unpack_record(a, p, n, &rec) > 0)
		return rec;
	/* Anything but the well-formed fields we know (out of memory too):
	 * protobuf-c decides, so that both always read the same. */
	return (merge_rec_t *)protobuf_c_message_unpack(&shahidi__store__v1__record__descriptor,
							 arena_pb_allocator(a), n, in);
}

/* ---- packing ---- */

/* The writers are codec.h's (codec_put_*): one varint writer for every
 * stored value. */

static size_t stamp_size(const pb_stamp_t *s)
{
	return (s->hlc ? 9 : 0) + (s->device ? 9 : 0);
}

static size_t stamps_size(pb_stamp_t *const *st, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += 2 + stamp_size(st[i]); /* tag, length (at most 18) */
	return len;
}

static uint8_t *put_stamps(uint8_t *q, uint32_t number, pb_stamp_t *const *st, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		*q++ = (uint8_t)(number << 3 | 2);
		*q++ = (uint8_t)stamp_size(st[i]);
		if (st[i]->hlc)
			q += codec_put_fixed64(q, STAMP_HLC, st[i]->hlc);
		if (st[i]->device)
			q += codec_put_fixed64(q, STAMP_DEVICE, st[i]->device);
	}
	return q;
}

static size_t entry_size(const merge_entry_t *e)
{
	return (e->device ? 9 : 0) + (e->hlc ? 9 : 0) + (e->orig_hlc ? 9 : 0) + (e->dead ? 2 : 0) +
	       (e->value.len ? 1 + codec_varint_len(e->value.len) + e->value.len : 0) + (e->pending ? 2 : 0) +
	       (e->seq ? 1 + codec_varint_len(e->seq) : 0) + stamps_size(e->seen, e->n_seen);
}

/* es (or NULL): the first max_es entries' sizes, for their headers. */
#define REG_ES 8 /* recpack_pack's, on its stack: a register has a few */
static size_t register_size(const merge_reg_t *g, size_t *es, size_t max_es)
{
	size_t n = g->field ? 1 + codec_varint_len(g->field) : 0;
	for (size_t i = 0; i < g->n_entries; i++) {
		size_t e = entry_size(g->entries[i]);
		if (es && i < max_es)
			es[i] = e;
		n += 1 + codec_varint_len(e) + e;
	}
	n += stamps_size(g->tombstones, g->n_tombstones);
	return n + (g->instance.len ? 1 + codec_varint_len(g->instance.len) + g->instance.len : 0);
}

/* Whether anything in rec came from a field we do not know: then
 * protobuf-c packs it, keeping those fields. */
static bool has_unknown(const merge_rec_t *rec)
{
	if (rec->base.n_unknown_fields)
		return true;
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		if (g->base.n_unknown_fields)
			return true;
		for (size_t k = 0; k < g->n_entries; k++)
			if (g->entries[k]->base.n_unknown_fields)
				return true;
		for (size_t k = 0; k < g->n_tombstones; k++)
			if (g->tombstones[k]->base.n_unknown_fields)
				return true;
	}
	return false;
}

size_t recpack_sizes_len(const merge_rec_t *rec)
{
	size_t n = 1 + rec->n_registers;
	for (size_t i = 0; i < rec->n_registers; i++)
		n += rec->registers[i]->n_entries;
	return n;
}

/* sizes (or NULL): [0] whether protobuf-c packs it, then each register's
 * size followed by its entries'. */
size_t recpack_size_keep(const merge_rec_t *rec, size_t *sizes)
{
	bool unknown = has_unknown(rec);
	if (sizes)
		sizes[0] = unknown;
	if (unknown)
		return protobuf_c_message_get_packed_size(&rec->base);
	size_t n = 0, j = 1, fl = rec->form_id ? strlen(rec->form_id) : 0;
	if (rec->record_id.len)
		n += 1 + codec_varint_len(rec->record_id.len) + rec->record_id.len;
	if (fl)
		n += 1 + codec_varint_len(fl) + fl;
	if (rec->form_version)
		n += 1 + codec_varint_len(rec->form_version);
	n += (rec->base_device ? 9 : 0) + (rec->base_hlc ? 9 : 0);
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		size_t rs = register_size(g, sizes ? sizes + j + 1 : NULL, SIZE_MAX);
		if (sizes)
			sizes[j] = rs;
		j += 1 + g->n_entries;
		n += 1 + codec_varint_len(rs) + rs;
	}
	if (rec->n_writers)
		n += 1 + codec_varint_len(rec->n_writers * 8) + rec->n_writers * 8;
	if (rec->n_assigned)
		n += 1 + codec_varint_len(rec->n_assigned * 8) + rec->n_assigned * 8;
	if (rec->conflicts)
		n += 1 + codec_varint_len(rec->conflicts);
	if (rec->delete_conflict)
		n += 2;
	const uint64_t tail[REC_TAIL] = {rec->first_received_ms, rec->last_changed_ms,
					 rec->changes, rec->seq, rec->log_seq, rec->head_log_seq,
					 rec->base_seq, rec->erased_ms, rec->base_log_seq,
					 rec->base_origin, rec->base_change_id};
	for (uint32_t i = 0; i < REC_TAIL; i++)
		if (tail[i])
			n += codec_varint_len((uint64_t)(RECORD_FIRST_RECEIVED_MS + i) << 3) +
			     codec_varint_len(tail[i]);
	return n;
}

static uint8_t *put_fixed64s(uint8_t *q, uint32_t number, const uint64_t *v, size_t n)
{
	q += codec_put_len(q, number, n * 8);
	for (size_t i = 0; i < n; i++, q += 8) {
		uint64_t le = htole64(v[i]);
		memcpy(q, &le, 8);
	}
	return q;
}

size_t recpack_size(const merge_rec_t *rec)
{
	return recpack_size_keep(rec, NULL);
}

size_t recpack_pack_sized(const merge_rec_t *rec, const size_t *sizes, uint8_t *out)
{
	if (sizes ? sizes[0] != 0 : has_unknown(rec))
		return protobuf_c_message_pack(&rec->base, out);
	uint8_t *q = out;
	size_t j = 1;
	size_t fl = rec->form_id ? strlen(rec->form_id) : 0;
	if (rec->record_id.len) {
		q += codec_put_len(q, RECORD_RECORD_ID, rec->record_id.len);
		memcpy(q, rec->record_id.data, rec->record_id.len);
		q += rec->record_id.len;
	}
	if (fl) {
		q += codec_put_len(q, RECORD_FORM_ID, fl);
		memcpy(q, rec->form_id, fl);
		q += fl;
	}
	if (rec->form_version)
		q += codec_put_uint(q, RECORD_FORM_VERSION, rec->form_version);
	if (rec->base_device)
		q += codec_put_fixed64(q, RECORD_BASE_DEVICE, rec->base_device);
	if (rec->base_hlc)
		q += codec_put_fixed64(q, RECORD_BASE_HLC, rec->base_hlc);
	for (size_t i = 0; i < rec->n_registers; i++) {
		const merge_reg_t *g = rec->registers[i];
		size_t mine[REG_ES], rs, max_es = SIZE_MAX;
		const size_t *es = mine;
		if (sizes) {
			rs = sizes[j];
			es = sizes + j + 1;
		} else {
			rs = register_size(g, mine, REG_ES);
			max_es = REG_ES;
		}
		j += 1 + g->n_entries;
		q += codec_put_len(q, RECORD_REGISTERS, rs);
		if (g->field)
			q += codec_put_uint(q, REGISTER_FIELD, g->field);
		for (size_t k = 0; k < g->n_entries; k++) {
			const merge_entry_t *e = g->entries[k];
			q += codec_put_len(q, REGISTER_ENTRIES, k < max_es ? es[k] : entry_size(e));
			if (e->device)
				q += codec_put_fixed64(q, ENTRY_DEVICE, e->device);
			if (e->hlc)
				q += codec_put_fixed64(q, ENTRY_HLC, e->hlc);
			if (e->orig_hlc)
				q += codec_put_fixed64(q, ENTRY_ORIG_HLC, e->orig_hlc);
			if (e->dead)
				q += codec_put_uint(q, ENTRY_DEAD, 1);
			if (e->value.len) {
				q += codec_put_len(q, ENTRY_VALUE, e->value.len);
				memcpy(q, e->value.data, e->value.len);
				q += e->value.len;
			}
			if (e->pending)
				q += codec_put_uint(q, ENTRY_PENDING, 1);
			if (e->seq)
				q += codec_put_uint(q, ENTRY_SEQ, e->seq);
			q = put_stamps(q, ENTRY_SEEN, e->seen, e->n_seen);
		}
		q = put_stamps(q, REGISTER_TOMBSTONES, g->tombstones, g->n_tombstones);
		if (g->instance.len)
			q += codec_put_bytes(q, REGISTER_INSTANCE, g->instance.data, g->instance.len);
	}
	if (rec->n_writers)
		q = put_fixed64s(q, RECORD_WRITERS, rec->writers, rec->n_writers);
	if (rec->n_assigned)
		q = put_fixed64s(q, RECORD_ASSIGNED, rec->assigned, rec->n_assigned);
	if (rec->conflicts)
		q += codec_put_uint(q, RECORD_CONFLICTS, rec->conflicts);
	if (rec->delete_conflict)
		q += codec_put_uint(q, RECORD_DELETE_CONFLICT, 1);
	/* the receipt metadata, in field order (RECORD_FIRST_RECEIVED_MS
	 * to RECORD_BASE_CHANGE_ID follow one another) */
	const uint64_t tail[REC_TAIL] = {rec->first_received_ms, rec->last_changed_ms,
					 rec->changes, rec->seq, rec->log_seq, rec->head_log_seq,
					 rec->base_seq, rec->erased_ms, rec->base_log_seq,
					 rec->base_origin, rec->base_change_id};
	for (uint32_t i = 0; i < REC_TAIL; i++)
		if (tail[i])
			q += codec_put_uint(q, RECORD_FIRST_RECEIVED_MS + i, tail[i]);
	return (size_t)(q - out);
}

size_t recpack_pack(const merge_rec_t *rec, uint8_t *out)
{
	return recpack_pack_sized(rec, NULL, out);
}

/* ---- the current values, read in place ---- */

/* One register p[0..n): its current value to ops, unless unwanted or
 * without a live value. Entries store their device and stamp as 0 when
 * they are the record's base ones (see proto/store.proto). */
static int view_register(const uint8_t *p, size_t n, uint64_t base_dev, uint64_t base_hlc,
			 const struct recpack_view_ops *ops, void *arg)
{
	struct pb_field f, g;
	struct recpack_value best = {0};
	uint64_t best_hlc = 0, best_dev = 0;
	bool found = false;
	size_t pos = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number == REGISTER_FIELD && f.wire_type == 0) {
			best.field = (uint32_t)f.varint;
			/* The field number comes first: a register nobody
			 * wants is not read any further. */
			if (best.field && ops->want && !ops->want(arg, best.field))
				return 0;
			continue;
		}
		if (f.number == REGISTER_INSTANCE && f.wire_type == 2 && f.len == 16) {
			best.instance = f.data; /* after the entries (recpack_pack) */
			continue;
		}
		if (f.number != REGISTER_ENTRIES || f.wire_type != 2)
			continue;
		uint64_t dev = 0, hlc = 0;
		bool dead = false, pending = false;
		const uint8_t *v = NULL;
		size_t vlen = 0, p2 = 0;
		while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
			switch (g.number) {
			case ENTRY_DEVICE: dev = g.varint; break;
			case ENTRY_HLC: hlc = g.varint; break;
			case ENTRY_DEAD: dead = g.varint != 0; break;
			case ENTRY_VALUE: v = g.data; vlen = g.len; break;
			case ENTRY_PENDING: pending = g.varint != 0; break;
			default: break;
			}
		}
		if (r < 0)
			return -EPROTO;
		if (dead || pending) /* merge.c's live() */
			continue;
		dev = dev ? dev : base_dev;
		hlc = hlc ? hlc : base_hlc;
		if (!found || merge_shown_before(hlc, dev, best_hlc, best_dev)) {
			found = true;
			best_hlc = hlc;
			best_dev = dev;
			best.value = v;
			best.value_len = vlen;
		}
	}
	if (r < 0)
		return -EPROTO;
	return found ? ops->value(arg, &best) : 0;
}

int recpack_view(const uint8_t *p, size_t n, const struct recpack_view_ops *ops, void *arg,
		 struct recpack_view *v)
{
	struct pb_field f;
	uint64_t base_dev = 0, base_hlc = 0;
	size_t pos = 0;
	int r;
	memset(v, 0, sizeof(*v));
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		switch (f.number) {
		case RECORD_RECORD_ID:
			v->record_id = f.data;
			v->record_id_len = f.len;
			break;
		case RECORD_FORM_ID:
			v->form_id = f.data;
			v->form_id_len = f.len;
			break;
		case RECORD_FORM_VERSION: v->form_version = (uint32_t)f.varint; break;
		/* before the registers, as recpack_pack() writes them */
		case RECORD_BASE_DEVICE: base_dev = f.varint; break;
		case RECORD_BASE_HLC: base_hlc = f.varint; break;
		case RECORD_REGISTERS:
			if (f.wire_type != 2)
				return -EPROTO;
			if ((r = view_register(f.data, f.len, base_dev, base_hlc, ops, arg)) < 0)
				return r;
			break;
		case RECORD_WRITERS:
			if (f.wire_type == 2) {
				v->writers = f.data;
				v->writers_len = f.len - f.len % 8;
			}
			break;
		case RECORD_CONFLICTS: v->conflicts = (uint32_t)f.varint; break;
		case RECORD_FIRST_RECEIVED_MS: v->first_received_ms = f.varint; break;
		case RECORD_LAST_CHANGED_MS: v->last_changed_ms = f.varint; break;
		case RECORD_LOG_SEQ: v->log_seq = f.varint; break;
		case RECORD_BASE_LOG_SEQ: v->base_log_seq = f.varint; break;
		default: break;
		}
	}
	return r < 0 ? -EPROTO : 0;
}

uint64_t recpack_pointer(const uint8_t *p, size_t n)
{
	struct pb_field f;
	size_t pos = 0;
	while (codec_pb_next(p, n, &pos, &f) > 0)
		if ((f.number == RECORD_LOG_SEQ || f.number == RECORD_BASE_LOG_SEQ) &&
		    f.wire_type == 0)
			return f.varint;
	return 0;
}

bool recpack_holds(const uint8_t *p, size_t n, uint32_t field, const uint8_t *instance)
{
	struct pb_field f, g;
	size_t pos = 0;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		if (f.number != RECORD_REGISTERS || f.wire_type != 2)
			continue;
		uint32_t got = 0;
		const uint8_t *inst = NULL;
		size_t p2 = 0;
		while (codec_pb_next(f.data, f.len, &p2, &g) > 0) {
			if (g.number == REGISTER_FIELD && g.wire_type == 0)
				got = (uint32_t)g.varint;
			else if (g.number == REGISTER_INSTANCE && g.wire_type == 2 && g.len == 16)
				inst = g.data;
		}
		if (got == field && !inst == !instance && (!inst || !memcmp(inst, instance, 16)))
			return true;
	}
	return false;
}
