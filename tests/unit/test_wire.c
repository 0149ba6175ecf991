/* wire: the decoder's one-walk reading of a Value (wire_value_read) says
 * exactly what the two walks it replaced said (wire_value_check, then
 * form_value_parse), on every value the generator makes and on mutants of
 * them: flipped bytes, truncations, two values end to end. */
#include <math.h>

#include "arena.h"
#include "check.h"
#include "codec.h"
#include "common.h"
#include "fields.h"
#include "form.h"
#include "gen.h"
#include "wire.h"

#define NOW 1767225600000ull /* 2026-01-01 */

static const uint32_t trusted_of[] = {0, FT_TEXT, FT_DATE, FT_CHOICE, FT_INTEGER, FT_CHOICES};

/* the old path's verdict: -EPROTO, -EBADMSG (two members) or 0 with *v */
static int old_read(const uint8_t *p, size_t n, uint32_t trusted, struct form_value *v)
{
	if (wire_value_check(p, n, trusted) < 0)
		return -EPROTO;
	return form_value_parse(p, n, v) < 0 ? -EBADMSG : 0;
}

static bool same_value(const struct form_value *a, const struct form_value *b)
{
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case FT_NONE: return true;
	case FT_TEXT:
	case FT_DATE:
	case FT_CHOICE:
	case FT_LINK: return a->str == b->str && a->str_len == b->str_len;
	case FT_INTEGER:
	case FT_DATETIME: return a->i == b->i;
	case FT_DECIMAL: return !memcmp(&a->d, &b->d, sizeof(a->d));
	case FT_BOOLEAN: return a->b == b->b;
	default: return a->sub == b->sub && a->sub_len == b->sub_len;
	}
}

static size_t n_checked;

static void agree(const uint8_t *p, size_t n)
{
	for (size_t t = 0; t < SH_ARRAY_SIZE(trusted_of); t++) {
		struct form_value a, b;
		memset(&a, 0xa5, sizeof(a));
		memset(&b, 0x5a, sizeof(b));
		int ra = old_read(p, n, trusted_of[t], &a);
		int rb = wire_value_read(p, n, trusted_of[t], &b);
		if (ra != rb || (ra == 0 && !same_value(&a, &b))) {
			fprintf(stderr, "disagree on %zu bytes, trusted %u: old %d new %d\n", n,
				trusted_of[t], ra, rb);
			for (size_t i = 0; i < n; i++)
				fprintf(stderr, "%02x", p[i]);
			fprintf(stderr, "\n");
			CHECK(0);
		}
		n_checked++;
	}
}

/* Every value the generator makes for every field of every built-in form,
 * and mutants of each. */
static void test_agrees_with_the_two_walks(void)
{
	struct form_registry *reg;
	char err[256];
	CHECK(form_registry_new(&reg) == 0);
	CHECK(form_registry_add_builtin(reg, err, sizeof(err)) == 0);
	struct arena *a = arena_new();
	struct gen_rng rng = {42};
	uint8_t *prev = NULL;
	size_t prev_n = 0;
	size_t rounds = getenv("SHAHIDI_TEST_QUICK") ? 2 : 8;
	for (size_t round = 0; round < rounds; round++)
		for (size_t fi = 0; fi < form_registry_count(reg); fi++) {
			const struct form *f = form_registry_at(reg, fi);
			for (size_t k = 0; k < f->n_fields; k++) {
				arena_reset(a);
				Shahidi__V1__Value *v = gen_value(&rng, a, &f->fields[k], NOW);
				CHECK(v);
				size_t n = shahidi__v1__value__get_packed_size(v);
				uint8_t *p = malloc(n + prev_n + 1);
				CHECK(p);
				shahidi__v1__value__pack(v, p);
				agree(p, n);
				/* a flipped byte, every prefix, this value then the last */
				for (size_t i = 0; i < n; i++) {
					uint8_t keep = p[i];
					p[i] ^= (uint8_t)(1u << gen_below(&rng, 8));
					agree(p, n);
					p[i] = (uint8_t)gen_next(&rng);
					agree(p, n);
					p[i] = keep;
					agree(p, i);
				}
				if (prev_n)
					memcpy(p + n, prev, prev_n);
				agree(p, n + prev_n);
				free(prev);
				prev = p;
				prev_n = n;
			}
		}
	free(prev);
	arena_free(a);
	form_registry_free(reg);
	CHECK(n_checked > 10000);
}

/* Each thing the one walk must still refuse or read, named. */
static void test_each_rule(void)
{
	struct form_value v;
	/* two members of the oneof: well-formed, but refused */
	static const uint8_t two[] = {0x10, 0x04, 0x20, 0x01};
	CHECK_EQ_INT(wire_value_read(two, sizeof(two), 0, &v), -EBADMSG);
	/* text that is not UTF-8: malformed unless the caller checks it */
	static const uint8_t bad_text[] = {0x0a, 0x02, 0xc3, 0x28};
	CHECK_EQ_INT(wire_value_read(bad_text, sizeof(bad_text), 0, &v), -EPROTO);
	CHECK_EQ_INT(wire_value_read(bad_text, sizeof(bad_text), FT_TEXT, &v), 0);
	CHECK(v.kind == FT_TEXT && v.str == bad_text + 2 && v.str_len == 2);
	/* a choice code (in Choices) that is not UTF-8, whatever is trusted */
	static const uint8_t bad_choices[] = {0x42, 0x03, 0x0a, 0x01, 0xff};
	CHECK_EQ_INT(wire_value_read(bad_choices, sizeof(bad_choices), FT_CHOICES, &v), -EPROTO);
	/* a GeoPoint member of the wrong wire type */
	static const uint8_t bad_geo[] = {0x4a, 0x02, 0x08, 0x01};
	CHECK_EQ_INT(wire_value_read(bad_geo, sizeof(bad_geo), 0, &v), -EPROTO);
	/* a member of the wrong wire type; an unknown member is skipped */
	static const uint8_t bad_wt[] = {0x12, 0x00};
	CHECK_EQ_INT(wire_value_read(bad_wt, sizeof(bad_wt), 0, &v), -EPROTO);
	static const uint8_t unknown[] = {0x68, 0x01, 0x10, 0x09};
	CHECK_EQ_INT(wire_value_read(unknown, sizeof(unknown), 0, &v), 0);
	CHECK(v.kind == FT_INTEGER && v.i == -5); /* zigzag */
	static const uint8_t dec[] = {0x19, 0, 0, 0, 0, 0, 0, 0x04, 0x40};
	CHECK_EQ_INT(wire_value_read(dec, sizeof(dec), 0, &v), 0);
	CHECK(v.kind == FT_DECIMAL && v.d == 2.5);
	static const uint8_t boolean[] = {0x20, 0x01};
	CHECK_EQ_INT(wire_value_read(boolean, sizeof(boolean), 0, &v), 0);
	CHECK(v.kind == FT_BOOLEAN && v.b);
	CHECK_EQ_INT(wire_value_read(NULL, 0, 0, &v), 0);
	CHECK(v.kind == FT_NONE);
	/* truncated */
	CHECK_EQ_INT(wire_value_read(bad_text, 3, FT_TEXT, &v), -EPROTO);
}

/* A FieldWrite: field, a text value of one byte, and `stamps` base stamps. */
static void put_write(struct buf *b, uint32_t field, char text, size_t stamps)
{
	struct buf w = {0}, v = {0}, st = {0};
	uint8_t t = (uint8_t)text;
	CHECK(codec_pb_put_bytes(&v, FT_TEXT, &t, 1) == 0);
	CHECK(codec_pb_put_uint(&w, FIELD_WRITE_FIELD, field) == 0);
	CHECK(codec_pb_put_bytes(&w, FIELD_WRITE_VALUE, v.data, v.len) == 0);
	CHECK(codec_pb_put_fixed64(&st, STAMP_HLC, 7) == 0);
	CHECK(codec_pb_put_fixed64(&st, STAMP_DEVICE, 9) == 0);
	for (size_t i = 0; i < stamps; i++)
		CHECK(codec_pb_put_bytes(&w, FIELD_WRITE_SUPERSEDES, st.data, st.len) == 0);
	CHECK(codec_pb_put_bytes(b, CHANGE_FIELDS, w.data, w.len) == 0);
	buf_free(&w);
	buf_free(&v);
	buf_free(&st);
}

static int read(const struct buf *b, size_t max_fields, struct arena *a, struct wire_change *c)
{
	return wire_read_change(a, a, max_fields, 4, b->data, b->len, c);
}

/* The change is read in one walk; what is refused, and why, is as when
 * it was framed and counted first. */
static void test_read_change(void)
{
	struct arena *a = arena_new();
	struct wire_change c;
	struct buf b = {0};
	/* many writes (the array grows), each read whole and in order */
	CHECK(codec_pb_put_uint(&b, CHANGE_CHANGE_ID, 3) == 0);
	for (uint32_t i = 1; i <= 300; i++)
		put_write(&b, i, (char)('a' + i % 26), i % 3);
	CHECK(codec_pb_put_uint(&b, CHANGE_CREATE, 1) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), 0);
	CHECK_EQ_INT(c.n_fields, 300);
	CHECK(c.change_id == 3 && c.create && !c.has_deletion);
	for (uint32_t i = 1; i <= 300; i++) {
		const struct wire_write *w = &c.fields[i - 1];
		CHECK_EQ_INT(w->field, i);
		CHECK(w->value_len == 3 && w->value[2] == 'a' + i % 26);
		CHECK_EQ_INT(w->n_base, i % 3);
		for (size_t k = 0; k < w->n_base; k++)
			CHECK(w->base[k].hlc == 7 && w->base[k].device == 9);
	}
	/* one write more than allowed; exactly as many */
	CHECK_EQ_INT(read(&b, 299, a, &c), -EMSGSIZE);
	CHECK_EQ_INT(read(&b, 300, a, &c), 0);
	CHECK_EQ_INT(c.n_fields, 300);
	/* a write with too many base stamps */
	put_write(&b, 301, 'x', 5);
	CHECK_EQ_INT(read(&b, 512, a, &c), -EMSGSIZE);
	/* then a write that is not a FieldWrite's framing: the first wins */
	static const uint8_t broken[] = {0x42, 0x02, 0x0a, 0x05};
	CHECK(buf_append(&b, broken, sizeof(broken)) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), -EMSGSIZE);
	/* the broken write alone, after a good one */
	buf_reset(&b);
	put_write(&b, 1, 'a', 0);
	CHECK(buf_append(&b, broken, sizeof(broken)) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), -EPROTO);
	/* too many writes wins over a broken write among them */
	buf_reset(&b);
	CHECK(buf_append(&b, broken, sizeof(broken)) == 0);
	put_write(&b, 1, 'a', 0);
	CHECK_EQ_INT(read(&b, 2, a, &c), -EPROTO);
	CHECK_EQ_INT(read(&b, 1, a, &c), -EMSGSIZE);
	/* a framing error of the change wins over both */
	static const uint8_t bad_id[] = {0x0a, 0x00}; /* change_id as bytes */
	CHECK(buf_append(&b, bad_id, sizeof(bad_id)) == 0);
	CHECK_EQ_INT(read(&b, 1, a, &c), -EPROTO);
	CHECK_EQ_INT(read(&b, 512, a, &c), -EPROTO);
	/* a field number past 32 bits */
	buf_reset(&b);
	static const uint8_t big[] = {0x42, 0x06, 0x08, 0x80, 0x80, 0x80, 0x80, 0x10};
	CHECK(buf_append(&b, big, sizeof(big)) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), -EPROTO);
	memcpy(b.data + 3, "\xff\xff\xff\xff\x0f", 5); /* 2^32 - 1 is one */
	CHECK_EQ_INT(read(&b, 512, a, &c), 0);
	CHECK(c.n_fields == 1 && c.fields[0].field == UINT32_MAX);
	/* two deletions; one */
	buf_reset(&b);
	put_write(&b, 1, 'a', 0);
	CHECK(codec_pb_put_bytes(&b, CHANGE_DELETION, "\x08\x01", 2) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), 0);
	CHECK(c.has_deletion && c.deleted && c.n_fields == 1);
	CHECK(codec_pb_put_bytes(&b, CHANGE_DELETION, "\x08\x01", 2) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), -EPROTO);
	/* none at all */
	buf_reset(&b);
	CHECK(codec_pb_put_uint(&b, CHANGE_CHANGE_ID, 3) == 0);
	CHECK_EQ_INT(read(&b, 512, a, &c), 0);
	CHECK(c.n_fields == 0 && c.fields);
	buf_free(&b);
	arena_free(a);
}

/* ---- the reader of a change as it was before it read in one walk
 * (commit d336409), kept as the model the new one must agree with ---- */

static int model_read_stamps(struct arena *a, const uint8_t *p, size_t n, uint32_t number,
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

static int model_read_field_write(struct arena *a, size_t max_base, const uint8_t *p, size_t n,
			    struct wire_write *w)
{
	struct pb_field f;
	size_t pos = 0, values = 0, stamps = 0, seen = 0;
	int r;
	memset(w, 0, sizeof(*w));
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
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
	if (stamps && (r = model_read_stamps(a, p, n, FIELD_WRITE_SUPERSEDES, max_base, &w->base, &w->n_base)) < 0)
		return r;
	return seen ? model_read_stamps(a, p, n, FIELD_WRITE_SEEN, WIRE_MAX_SEEN, &w->seen, &w->n_seen) : 0;
}

static int model_read_change(struct arena *a, struct arena *tmp, size_t max_fields, size_t max_base,
		     const uint8_t *p, size_t n, struct wire_change *c)
{
	struct pb_field f;
	size_t pos = 0, nf = 0, deletions = 0;
	int r;
	memset(c, 0, sizeof(*c));
	while ((r = codec_pb_next(p, n, &pos, &f)) > 0) {
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
		case CHANGE_FIELDS: r = WIRE_TYPE(f, 2); nf++; break;
		case CHANGE_DELETION: r = WIRE_TYPE(f, 2) < 0 || ++deletions > 1 ? -EPROTO : 0; break;
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
	c->fields = arena_alloc(tmp, (nf + 1) * sizeof(*c->fields));
	if (!c->fields)
		return -ENOMEM;
	pos = 0;
	while (codec_pb_next(p, n, &pos, &f) > 0) {
		if (f.number == CHANGE_FIELDS) {
			if ((r = model_read_field_write(a, max_base, f.data, f.len, &c->fields[c->n_fields++])) < 0)
				return r;
		} else if (f.number == CHANGE_DELETION) {
			struct pb_field g;
			size_t p2 = 0;
			c->has_deletion = true;
			while ((r = codec_pb_next(f.data, f.len, &p2, &g)) > 0) {
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
			if ((r = model_read_stamps(a, f.data, f.len, DELETION_SUPERSEDES, max_base, &c->del_base,
					     &c->n_del_base)) < 0 ||
			    (r = model_read_stamps(a, f.data, f.len, DELETION_SEEN, WIRE_MAX_SEEN, &c->del_seen,
					     &c->n_del_seen)) < 0)
				return r;
		}
	}
	return 0;
}


static bool same_stamps(const struct merge_stamp *a, size_t na, const struct merge_stamp *b,
			size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].hlc != b[i].hlc || a[i].device != b[i].device)
			return false;
	return true;
}

static bool same_change(const struct wire_change *a, const struct wire_change *b)
{
	if (a->change_id != b->change_id || a->hlc != b->hlc || a->origin != b->origin ||
	    a->form_version != b->form_version || a->create != b->create ||
	    a->erased != b->erased || a->record_id != b->record_id ||
	    a->record_id_len != b->record_id_len || a->form_id != b->form_id ||
	    a->form_id_len != b->form_id_len || a->n_fields != b->n_fields ||
	    a->has_deletion != b->has_deletion || a->deleted != b->deleted ||
	    a->del_hlc != b->del_hlc ||
	    !same_stamps(a->del_base, a->n_del_base, b->del_base, b->n_del_base) ||
	    !same_stamps(a->del_seen, a->n_del_seen, b->del_seen, b->n_del_seen))
		return false;
	for (size_t i = 0; i < a->n_fields; i++) {
		const struct wire_write *x = &a->fields[i], *y = &b->fields[i];
		if (x->field != y->field || x->hlc != y->hlc || x->value != y->value ||
		    x->value_len != y->value_len || x->instance != y->instance ||
		    x->instance_len != y->instance_len ||
		    !same_stamps(x->base, x->n_base, y->base, y->n_base) ||
		    !same_stamps(x->seen, x->n_seen, y->seen, y->n_seen))
			return false;
	}
	return true;
}

static void change_agrees(struct arena *a, const uint8_t *p, size_t n, size_t max_fields)
{
	struct wire_change x, y;
	int rx = model_read_change(a, a, max_fields, 3, p, n, &x);
	int ry = wire_read_change(a, a, max_fields, 3, p, n, &y);
	if (rx != ry || (rx == 0 && !same_change(&x, &y))) {
		fprintf(stderr, "disagree on a change of %zu bytes (max %zu): old %d new %d\n", n,
			max_fields, rx, ry);
		CHECK(0);
	}
	n_checked++;
}

/* Generated changes (v1, v3 with instances, stamps and deletions) and
 * their mutants read alike by the model and by wire_read_change. */
static void test_change_agrees_with_the_model(void)
{
	struct form_registry *reg;
	char err[256];
	CHECK(form_registry_new(&reg) == 0);
	CHECK(form_registry_add_builtin(reg, err, sizeof(err)) == 0);
	struct arena *a = arena_new(), *sa = arena_new();
	struct gen_rng rng = {7};
	size_t rounds = getenv("SHAHIDI_TEST_QUICK") ? 4 : 24;
	n_checked = 0;
	for (size_t round = 0; round < rounds; round++)
		for (size_t fi = 0; fi < form_registry_count(reg); fi++) {
			arena_reset(a);
			const struct form *f = form_registry_at(reg, fi);
			Shahidi__V1__Change *c = gen_report(&rng, a, f, round + 1, 1000 + round, NOW);
			CHECK(c);
			/* stamps where the generator makes none: a write's base,
			 * an instance removal's view, a deletion */
			static Shahidi__V1__Stamp st = SHAHIDI__V1__STAMP__INIT, *stp[2] = {&st, &st};
			st.hlc = 5;
			st.device = 6;
			if (c->n_fields > 1) {
				c->fields[0]->n_supersedes = 2;
				c->fields[0]->supersedes = stp;
				c->fields[1]->n_seen = 1;
				c->fields[1]->seen = stp;
				c->fields[1]->hlc = 77;
			}
			Shahidi__V1__Deletion del = SHAHIDI__V1__DELETION__INIT;
			if (round % 2) {
				del.deleted = true;
				del.hlc = 9;
				del.n_supersedes = 1;
				del.supersedes = stp;
				del.n_seen = 2;
				del.seen = stp;
				c->deletion = &del;
			}
			size_t n = shahidi__v1__change__get_packed_size(c);
			uint8_t *p = malloc(n);
			CHECK(p);
			shahidi__v1__change__pack(c, p);
			for (size_t mf = 0; mf < 3; mf++) {
				size_t max = mf == 0 ? 512 : mf == 1 ? c->n_fields : c->n_fields - 1;
				arena_reset(sa);
				change_agrees(sa, p, n, max);
			}
			for (size_t i = 0; i < n; i++) {
				uint8_t keep = p[i];
				arena_reset(sa);
				p[i] ^= (uint8_t)(1u << gen_below(&rng, 8));
				change_agrees(sa, p, n, 512);
				p[i] = (uint8_t)gen_next(&rng);
				change_agrees(sa, p, n, 512);
				p[i] = keep;
				if (i % 7 == 0)
					change_agrees(sa, p, i, 512);
			}
			free(p);
		}
	arena_free(a);
	arena_free(sa);
	form_registry_free(reg);
	CHECK(n_checked > 10000);
}

int main(void)
{
	RUN(test_change_agrees_with_the_model);
	RUN(test_read_change);
	RUN(test_each_rule);
	RUN(test_agrees_with_the_two_walks);
	return 0;
}
