#include "wire.h"

#include <errno.h>
#include <string.h>

#include "arena.h"
#include "codec.h"
#include "common.h"
#include "fields.h"
#include "form.h"

static int read_stamps(struct arena *a, const uint8_t *p, size_t n, uint32_t number,
		       size_t max, struct merge_stamp **ret, size_t *ret_n)
{
	struct pb_field f, g;
	size_t pos = 0, count = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0)
		count += f.number == number;
	if (r < 0)
		return r;
	if (count > max)
		return -EMSGSIZE;
	struct merge_stamp *st = arena_alloc(a, (count + 1) * sizeof(*st));
	if (!st)
		return -ENOMEM;
	size_t k = 0;
	pos = 0;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		if (f.number != number)
			continue;
		if (WIRE_TYPE(f, 2) < 0)
			return -EPROTO;
		struct merge_stamp s = {0, 0};
		size_t p2 = 0;
		while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
			if ((g.number == STAMP_HLC || g.number == STAMP_DEVICE) && WIRE_TYPE(g, 1) < 0)
				return -EPROTO;
			if (g.number == STAMP_HLC)
				s.hlc = g.varint;
			else if (g.number == STAMP_DEVICE)
				s.device = g.varint;
		}
		if (r < 0)
			return r;
		st[k++] = s;
	}
	*ret = st;
	*ret_n = k;
	return 0;
}

static int read_field_write(struct arena *a, size_t max_base, const uint8_t *p, size_t n,
			    struct wire_write *w)
{
	struct pb_field f;
	size_t pos = 0, values = 0, stamps = 0, seen = 0;
	int r;
	memset(w, 0, sizeof(*w));
	for (;;) {
		/* The tags every write has (its field, value and instance) read
		 * here, as codec_pb_next would read them: a third of the
		 * instructions of reading a change went to its generality. Any
		 * other tag, and the end, take the general path below. */
		uint64_t v;
		if (pos < n && p[pos] == (FIELD_WRITE_FIELD << 3 | 0)) {
			pos++;
			if (pos < n && p[pos] < 0x80) {
				v = p[pos++];
			} else if (n - pos >= 2 && p[pos + 1] < 0x80) {
				/* 128 to 16383: repeat groups' fields */
				v = (uint64_t)(p[pos] & 0x7f) | (uint64_t)p[pos + 1] << 7;
				pos += 2;
			} else if (codec_get_varint(p, n, &pos, &v) < 0)
				return -EPROTO;
			if (v > UINT32_MAX)
				return -EPROTO;
			w->field = (uint32_t)v;
			continue;
		}
		if (pos < n && (p[pos] == (FIELD_WRITE_VALUE << 3 | 2) ||
				p[pos] == (FIELD_WRITE_INSTANCE << 3 | 2))) {
			bool value = p[pos++] == (FIELD_WRITE_VALUE << 3 | 2);
			if (pos < n && p[pos] < 0x80)
				v = p[pos++];
			else if (codec_get_varint(p, n, &pos, &v) < 0)
				return -EPROTO;
			if (v > n - pos || (value && ++values > 1))
				return -EPROTO;
			if (value) {
				w->value = p + pos;
				w->value_len = (size_t)v;
			} else {
				w->instance = p + pos;
				w->instance_len = (size_t)v;
			}
			pos += (size_t)v;
			continue;
		}
		if ((r = codec_pb_next(p, n, &pos, &f)) <= 0)
			break;
		switch (f.number) {
		case FIELD_WRITE_FIELD:
			if (WIRE_TYPE(f, 0) < 0 || f.varint > UINT32_MAX)
				return -EPROTO;
			w->field = (uint32_t)f.varint;
			break;
		case FIELD_WRITE_VALUE:
			/* a value given twice would be merged by protobuf: refuse */
			if (WIRE_TYPE(f, 2) < 0 || ++values > 1)
				return -EPROTO;
			w->value = f.data;
			w->value_len = f.len;
			break;
		case FIELD_WRITE_HLC:
			if (WIRE_TYPE(f, 1) < 0)
				return -EPROTO;
			w->hlc = f.varint;
			break;
		case FIELD_WRITE_SUPERSEDES:
			if (WIRE_TYPE(f, 2) < 0)
				return -EPROTO;
			stamps++;
			break;
		case FIELD_WRITE_INSTANCE:
			if (WIRE_TYPE(f, 2) < 0)
				return -EPROTO;
			w->instance = f.data;
			w->instance_len = f.len;
			break;
		case FIELD_WRITE_SEEN:
			if (WIRE_TYPE(f, 2) < 0)
				return -EPROTO;
			seen++;
			break;
		default:
			break;
		}
	}
	if (r < 0)
		return r;
	/* most writes name no base and no view: no second pass for them */
	if (stamps && (r = read_stamps(a, p, n, FIELD_WRITE_SUPERSEDES, max_base, &w->base, &w->n_base)) < 0)
		return r;
	return seen ? read_stamps(a, p, n, FIELD_WRITE_SEEN, WIRE_MAX_SEEN, &w->seen, &w->n_seen) : 0;
}

/* A Change's Deletion f[0..n): its flag, stamp, base and view. */
static int read_deletion(struct arena *a, size_t max_base, const uint8_t *p, size_t n,
			 struct wire_change *c)
{
	struct pb_field g;
	size_t p2 = 0;
	int r;
	c->has_deletion = true;
	while ((r = codec_pb_next(p, n, &p2, &g)) > 0) {
		if (g.number == DELETION_DELETED && WIRE_TYPE(g, 0) == 0)
			c->deleted = g.varint != 0;
		else if (g.number == DELETION_HLC && WIRE_TYPE(g, 1) == 0)
			c->del_hlc = g.varint;
		else if (g.number <= DELETION_SEEN &&
			 (g.number >= DELETION_SUPERSEDES ? WIRE_TYPE(g, 2) : -EPROTO) < 0)
			return -EPROTO;
	}
	if (r < 0)
		return r;
	if ((r = read_stamps(a, p, n, DELETION_SUPERSEDES, max_base, &c->del_base,
			     &c->n_del_base)) < 0 ||
	    (r = read_stamps(a, p, n, DELETION_SEEN, WIRE_MAX_SEEN, &c->del_seen,
			     &c->n_del_seen)) < 0)
		return r;
	return 0;
}

int wire_read_change(struct arena *a, struct arena *tmp, size_t max_fields, size_t max_base,
		     const uint8_t *p, size_t n, struct wire_change *c)
{
	struct pb_field f;
	size_t pos = 0, nf = 0, cap = 0, deletions = 0;
	int r, inner = 0; /* the first error inside a write or the deletion */
	memset(c, 0, sizeof(*c));
	/* One walk (a first one only to count the writes was 2k instructions
	 * a change): each write is read when met, into an array that doubles
	 * up to max_fields + 1. What is refused, and why, is as if the whole
	 * change were framed and counted first: a framing error of the change
	 * wins over too many writes, which wins over the first error inside
	 * a write or the deletion, and no write past max_fields is read. */
	for (;;) {
		/* a write's tag and length read here, as codec_pb_next would:
		 * nearly every field of a change is one */
		if (pos < n && p[pos] == (CHANGE_FIELDS << 3 | 2)) {
			uint64_t m;
			size_t q = pos + 1;
			if (q < n && p[q] < 0x80)
				m = p[q++];
			else if (codec_get_varint(p, n, &q, &m) < 0)
				return -EPROTO;
			if (m > n - q)
				return -EPROTO;
			f.number = CHANGE_FIELDS;
			f.wire_type = 2;
			f.data = p + q;
			f.len = (size_t)m;
			pos = q + (size_t)m;
		} else if ((r = codec_pb_next(p, n, &pos, &f)) <= 0) {
			break;
		}
		switch (f.number) {
		case CHANGE_CHANGE_ID: r = WIRE_TYPE(f, 0); c->change_id = f.varint; break;
		case CHANGE_RECORD_ID: r = WIRE_TYPE(f, 2); c->record_id = f.data; c->record_id_len = f.len; break;
		case CHANGE_FORM_ID: r = WIRE_TYPE(f, 2); c->form_id = f.data; c->form_id_len = f.len; break;
		case CHANGE_FORM_VERSION:
			r = WIRE_TYPE(f, 0);
			c->form_version = f.varint > UINT32_MAX ? UINT32_MAX : (uint32_t)f.varint;
			break;
		case CHANGE_HLC: r = WIRE_TYPE(f, 1); c->hlc = f.varint; break;
		case CHANGE_ORIGIN: r = WIRE_TYPE(f, 1); c->origin = f.varint; break;
		case CHANGE_CREATE: r = WIRE_TYPE(f, 0); c->create = f.varint != 0; break;
		case CHANGE_FIELDS:
			if ((r = WIRE_TYPE(f, 2)) < 0 || ++nf > max_fields || inner)
				break;
			if (nf > cap) {
				size_t ncap = cap ? SH_MIN(cap * 2, max_fields) : SH_MIN((size_t)64, max_fields);
				struct wire_write *w = arena_alloc(tmp, (ncap + 1) * sizeof(*w));
				if (!w) {
					inner = -ENOMEM;
					break;
				}
				if (c->n_fields)
					memcpy(w, c->fields, c->n_fields * sizeof(*w));
				c->fields = w;
				cap = ncap;
			}
			inner = read_field_write(a, max_base, f.data, f.len, &c->fields[c->n_fields++]);
			break;
		case CHANGE_DELETION:
			if ((r = WIRE_TYPE(f, 2) < 0 || ++deletions > 1 ? -EPROTO : 0) < 0 || inner)
				break;
			inner = read_deletion(a, max_base, f.data, f.len, c);
			break;
		case CHANGE_ERASED: r = WIRE_TYPE(f, 0); c->erased = f.varint != 0; break;
		default: break;
		}
		if (r < 0)
			return -EPROTO;
	}
	if (r < 0)
		return r;
	if (nf > max_fields)
		return -EMSGSIZE;
	if (inner < 0)
		return inner;
	if (!c->fields && !(c->fields = arena_alloc(tmp, sizeof(*c->fields))))
		return -ENOMEM;
	return 0;
}

/* Checks a message's fields: wt[i] is the wire type of known field i
 * (0xff: unknown), utf8 a bit per string field, sub[i] a check of a
 * nested message. */
struct msg_rule {
	uint8_t n;
	const uint8_t *wt;
	uint32_t utf8;
	int (*sub[16])(const uint8_t *, size_t);
};

static int check_msg(const struct msg_rule *m, const uint8_t *p, size_t n, uint32_t trusted)
{
	struct pb_field f;
	size_t pos = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number >= m->n || m->wt[f.number] == 0xff)
			continue; /* unknown: kept as bytes by every parser */
		if (f.wire_type != m->wt[f.number])
			return -EPROTO;
		if ((m->utf8 >> f.number & 1) && f.number != trusted && f.len &&
		    !form_utf8_ok(f.data, f.len))
			return -EPROTO;
		if (f.number < 16 && m->sub[f.number] && m->sub[f.number](f.data, f.len) < 0)
			return -EPROTO;
	}
	return r < 0 ? -EPROTO : 0;
}

static int check_choices(const uint8_t *p, size_t n)
{
	static const uint8_t wt[2] = {0xff, 2};
	static const struct msg_rule m = {2, wt, 1u << 1, {0}};
	return check_msg(&m, p, n, 0);
}

static int check_geopoint(const uint8_t *p, size_t n)
{
	static const uint8_t wt[5] = {0xff, 1, 1, 1, 1};
	static const struct msg_rule m = {5, wt, 0, {0}};
	return check_msg(&m, p, n, 0);
}

static int check_attachment(const uint8_t *p, size_t n)
{
	static const uint8_t wt[5] = {0xff, 2, 2, 0, 2};
	static const struct msg_rule m = {5, wt, 1u << 4, {0}};
	return check_msg(&m, p, n, 0);
}

static int check_sealed(const uint8_t *p, size_t n)
{
	static const uint8_t wt[3] = {0xff, 2, 2};
	static const struct msg_rule m = {3, wt, 0, {0}};
	return check_msg(&m, p, n, 0);
}

int wire_value_check(const uint8_t *p, size_t n, uint32_t trusted)
{
	/* text, integer, decimal, boolean, date, datetime, choice, choices,
	 * geopoint, attachment, sealed, link: shahidi.v1.Value's members 1 to
	 * 12 */
	static const uint8_t wt[13] = {0xff, 2, 0, 1, 0, 2, 0, 2, 2, 2, 2, 2, 2};
	static const struct msg_rule m = {
		13, wt, 1u << 1 | 1u << 5 | 1u << 7,
		{[8] = check_choices, [9] = check_geopoint, [10] = check_attachment,
		 [11] = check_sealed}};
	return check_msg(&m, p, n, trusted);
}

int wire_value_read(const uint8_t *p, size_t n, uint32_t trusted, struct form_value *ret)
{
	/* as wire_value_check's rule, in one walk with form_value_parse's */
	static const uint8_t wt[13] = {0xff, 2, 0, 1, 0, 2, 0, 2, 2, 2, 2, 2, 2};
	/* filled in place (zeroing and copying a form_value was a tenth of
	 * this function): only what the member found sets */
	struct form_value *v = ret;
	v->kind = FT_NONE;
	bool two = false;
	struct pb_field f;
	size_t pos = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number > FT_LINK)
			continue; /* unknown: kept as bytes by every parser */
		if (f.wire_type != wt[f.number])
			return -EPROTO;
		two |= v->kind != FT_NONE;
		v->kind = (enum form_type)f.number;
		switch (f.number) {
		case FT_TEXT:
		case FT_DATE:
		case FT_CHOICE:
			if (f.number != trusted && f.len && !form_utf8_ok(f.data, f.len))
				return -EPROTO;
			/* fall through */
		case FT_LINK:
			v->str = f.data;
			v->str_len = f.len;
			break;
		case FT_INTEGER:
		case FT_DATETIME:
			/* sint64: zigzag */
			v->i = (int64_t)((f.varint >> 1) ^ (~(f.varint & 1) + 1));
			break;
		case FT_DECIMAL:
			memcpy(&v->d, &f.varint, sizeof(v->d));
			break;
		case FT_BOOLEAN:
			v->b = f.varint != 0;
			break;
		default:
			if ((f.number == FT_CHOICES && check_choices(f.data, f.len) < 0) ||
			    (f.number == FT_GEOPOINT && check_geopoint(f.data, f.len) < 0) ||
			    (f.number == FT_ATTACHMENT && check_attachment(f.data, f.len) < 0) ||
			    (f.number == FT_SEALED && check_sealed(f.data, f.len) < 0))
				return -EPROTO;
			v->sub = f.data;
			v->sub_len = f.len;
			break;
		}
	}
	if (r < 0)
		return -EPROTO;
	if (two)
		return -EBADMSG;
	return 0;
}

int wire_change_merge(struct arena *a, const struct wire_change *wc, uint64_t pusher,
		      struct merge_change *ret)
{
	size_t nw = wc->n_fields + (wc->has_deletion ? 1 : 0), ni = 0;
	/* every write is assigned whole below: no zeroing (it was 3% of the
	 * decoder's instructions), and one array for the instances' views */
	struct merge_write *w = arena_alloc(a, (nw + 1) * sizeof(*w));
	if (!w)
		return -ENOMEM;
	for (size_t i = 0; i < wc->n_fields; i++)
		ni += wc->fields[i].instance_len == 16;
	struct merge_inst *insts = ni ? arena_alloc(a, ni * sizeof(*insts)) : NULL;
	if (ni && !insts)
		return -ENOMEM;
	for (size_t i = 0; i < wc->n_fields; i++) {
		const struct wire_write *fw = &wc->fields[i];
		w[i] = (struct merge_write){
			.field = fw->field,
			.hlc = fw->hlc ? fw->hlc : wc->hlc,
			.value = fw->value,
			.value_len = fw->value_len,
			.base = fw->base,
			.n_base = (uint32_t)fw->n_base,
		};
		if (fw->instance_len == 16) {
			struct merge_inst *in = insts++;
			memcpy(in->id, fw->instance, 16);
			in->seen = fw->seen;
			in->n_seen = fw->n_seen;
			w[i].inst = in;
		}
	}
	if (wc->has_deletion) {
		struct merge_write *dw = &w[wc->n_fields];
		*dw = (struct merge_write){
			.field = MERGE_DELETION_FIELD,
			.hlc = wc->del_hlc ? wc->del_hlc : wc->hlc,
			.base = wc->del_base,
			.n_base = (uint32_t)wc->n_del_base,
		};
		dw->value = merge_deletion_value(wc->deleted, &dw->value_len);
	}
	*ret = (struct merge_change){
		.device = wc->origin ? wc->origin : pusher,
		.seq = wc->change_id,
		.form_version = wc->form_version,
		.writes = w,
		.n_writes = nw,
		.seen = wc->del_seen,
		.n_seen = wc->n_del_seen,
	};
	return 0;
}

int wire_each_write(const uint8_t *p, size_t n,
		    int (*fn)(void *arg, uint32_t field, const uint8_t *instance,
			      const uint8_t *value, size_t value_len),
		    void *arg)
{
	struct pb_field f, g;
	size_t pos = 0;
	int r;
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
		if (f.number != CHANGE_FIELDS || f.wire_type != 2)
			continue;
		uint32_t field = 0;
		const uint8_t *val = NULL, *inst = NULL;
		size_t vlen = 0, p2 = 0;
		while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
			if (g.number == FIELD_WRITE_FIELD)
				field = (uint32_t)g.varint;
			else if (g.number == FIELD_WRITE_VALUE) {
				val = g.data;
				vlen = g.len;
			} else if (g.number == FIELD_WRITE_INSTANCE && g.len == 16)
				inst = g.data;
		}
		if (r < 0)
			return -EPROTO;
		if ((field || inst) && (r = fn(arg, field, inst, val, vlen)) < 0)
			return r;
	}
	return r < 0 ? -EPROTO : 0;
}
