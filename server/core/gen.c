#include "gen.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "uuid.h"

uint64_t gen_next(struct gen_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t gen_below(struct gen_rng *r, uint64_t n)
{
	return gen_next(r) % n;
}

/* Words for narratives. Sentences are drawn word by word, so that
 * narratives compress about as well as real accounts do (deflate ~2.5:1 on
 * a batch, see shared/reference/performance.md), not as well as a few
 * repeated stock sentences would. */
static const char *const words[] = {
	"officers", "police", "station", "cell", "night", "morning", "market", "road", "boda",
	"matatu", "stage", "home", "village", "ward", "chief", "askari", "baton", "rungu", "gun",
	"vehicle", "Land", "Cruiser", "pickup", "beat", "beaten", "kicked", "slapped", "forced",
	"arrested", "detained", "released", "taken", "dragged", "threatened", "demanded", "money",
	"bribe", "shillings", "phone", "identity", "card", "family", "wife", "husband", "mother",
	"brother", "sister", "son", "daughter", "neighbour", "witness", "crowd", "protest", "curfew",
	"operation", "raid", "house", "door", "window", "roof", "fire", "burnt", "shop", "goods",
	"injury", "injuries", "head", "back", "leg", "legs", "arm", "arms", "ribs", "eye", "face",
	"blood", "bleeding", "pain", "hospital", "clinic", "doctor", "nurse", "P3", "form", "OB",
	"number", "report", "complaint", "refused", "record", "court", "charge", "charged", "bail",
	"cash", "bond", "lawyer", "paralegal", "IPOA", "statement", "days", "hours", "weeks",
	"later", "before", "after", "during", "while", "because", "without", "with", "from", "to",
	"at", "in", "on", "by", "near", "into", "out", "the", "a", "an", "and", "but", "then",
	"he", "she", "they", "him", "her", "them", "his", "their", "was", "were", "had", "did",
	"not", "no", "again", "still", "also", "only", "two", "three", "four", "five", "several",
	"many", "one", "first", "second", "last", "same", "other", "another", "uniformed",
	"plainclothes", "armed", "drunk", "angry", "afraid", "unable", "able", "walk", "work",
	"sleep", "eat", "speak", "see", "hear", "know", "tell", "told", "said", "asked", "shouted",
	"ran", "fell", "hid", "escaped", "returned", "followed", "searched", "found", "lost",
	"Tuesday", "Friday", "Sunday", "January", "March", "June", "September", "December",
	"Kayole", "Mathare", "Kibera", "Kondele", "Bondeni", "Likoni", "Changamwe", "Githurai",
};

static char *narrative(struct gen_rng *r, struct arena *a)
{
	char buf[1024];
	size_t n = 0;
	size_t target = 500 + gen_below(r, 300);
	bool start = true;
	while (n < target) {
		static const char *const syl[] = {"ka", "mu", "wa", "ki", "ny", "ra", "te", "lo", "shi",
						  "ma", "ju", "ba", "di", "go", "ne", "o", "a", "e"};
		char name[16];
		const char *w;
		if (gen_below(r, 7) == 0) {
			/* a name: people and places, as accounts are full of them */
			int k = 0;
			for (uint64_t i = 0, m = 2 + gen_below(r, 2); i < m; i++)
				k += snprintf(name + k, sizeof(name) - (size_t)k, "%s",
					      syl[gen_below(r, SH_ARRAY_SIZE(syl))]);
			name[0] = (char)(name[0] - 'a' + 'A');
			w = name;
		} else {
			w = words[gen_below(r, SH_ARRAY_SIZE(words))];
		}
		size_t wl = strlen(w);
		if (n + wl + 3 >= sizeof(buf))
			break;
		if (n)
			buf[n++] = ' ';
		memcpy(buf + n, w, wl);
		if (start && buf[n] >= 'a' && buf[n] <= 'z')
			buf[n] = (char)(buf[n] - 'a' + 'A');
		n += wl;
		start = gen_below(r, 12) == 0;
		if (start) {
			buf[n++] = gen_below(r, 6) ? '.' : ',';
			start = buf[n - 1] == '.';
		}
		if (gen_below(r, 40) == 0)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %u",
					      (unsigned)gen_below(r, 5000));
	}
	if (n > 800)
		n = 800;
	buf[n] = '\0';
	return arena_memdup(a, buf, n + 1);
}

static char *text_for(struct gen_rng *r, struct arena *a, const struct form_field *fd)
{
	static const char *const names[] = {"Achieng", "Wanjiru", "Otieno", "Kamau", "Mutua",
					    "Chebet", "Abdi", "Njeri", "Omondi", "Wafula"};
	static const char *const stations[] = {"Kilimani", "Kondele", "Mathare North", "Bondeni",
					       "Kayole", "Central", "Changamwe"};
	char buf[256];
	if (!strcmp(fd->name, "narrative"))
		return narrative(r, a);
	if (!strcmp(fd->name, "survivor_code"))
		snprintf(buf, sizeof(buf), "SV-%04u-%03u", (unsigned)gen_below(r, 10000),
			 (unsigned)gen_below(r, 1000));
	else if (strstr(fd->name, "phone"))
		snprintf(buf, sizeof(buf), "+2547%08u", (unsigned)gen_below(r, 100000000));
	else if (strstr(fd->name, "national_id"))
		snprintf(buf, sizeof(buf), "%08u", (unsigned)gen_below(r, 100000000));
	else if (strstr(fd->name, "name") || !strcmp(fd->name, "caseworker"))
		snprintf(buf, sizeof(buf), "%s %s", names[gen_below(r, SH_ARRAY_SIZE(names))],
			 names[gen_below(r, SH_ARRAY_SIZE(names))]);
	else if (strstr(fd->name, "identifiers"))
		snprintf(buf, sizeof(buf), "Cpl. %s, service no. %u, %s police station",
			 names[gen_below(r, SH_ARRAY_SIZE(names))], (unsigned)gen_below(r, 99999),
			 stations[gen_below(r, SH_ARRAY_SIZE(stations))]);
	else if (strstr(fd->name, "ob_number") || strstr(fd->name, "references"))
		snprintf(buf, sizeof(buf), "OB %u/%u/%u", (unsigned)gen_below(r, 90) + 1,
			 (unsigned)gen_below(r, 12) + 1, 2024 + (unsigned)gen_below(r, 3));
	else if (strstr(fd->name, "injur"))
		snprintf(buf, sizeof(buf), "Bruises on the back and arms, swelling of the left knee");
	else
		snprintf(buf, sizeof(buf), "%s ward, near the %s stage",
			 stations[gen_below(r, SH_ARRAY_SIZE(stations))],
			 names[gen_below(r, SH_ARRAY_SIZE(names))]);
	size_t n = strlen(buf);
	if (n > fd->max_length)
		n = fd->max_length;
	buf[n] = '\0';
	return arena_memdup(a, buf, n + 1);
}

static char *date_for(struct gen_rng *r, struct arena *a, uint64_t now_ms, bool future)
{
	char buf[32];
	int64_t day = (int64_t)(now_ms / 86400000ull);
	day += future ? (int64_t)gen_below(r, 60) : -(int64_t)gen_below(r, 700);
	/* civil_from_days (Howard Hinnant) */
	int64_t z = day + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = (int64_t)yoe + era * 400;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	unsigned d = doy - (153 * mp + 2) / 5 + 1;
	unsigned m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	snprintf(buf, sizeof(buf), "%04d-%02u-%02u", (int)y, m, d);
	return arena_memdup(a, buf, strlen(buf) + 1);
}

Shahidi__V1__Value *gen_value(struct gen_rng *r, struct arena *a, const struct form_field *fd,
			      uint64_t now_ms)
{
	Shahidi__V1__Value *v = arena_alloc(a, sizeof(*v));
	if (!v)
		return NULL;
	shahidi__v1__value__init(v);
	switch (fd->type) {
	case FT_TEXT:
		v->kind_case = SHAHIDI__V1__VALUE__KIND_TEXT;
		v->text = text_for(r, a, fd);
		break;
	case FT_INTEGER: {
		double lo = fd->has_range ? fd->min : 0, hi = fd->has_range ? fd->max : 100;
		if (hi - lo > 80)
			hi = lo + 80;
		v->kind_case = SHAHIDI__V1__VALUE__KIND_INTEGER;
		v->integer = (int64_t)lo + (int64_t)gen_below(r, (uint64_t)(hi - lo) + 1);
		break;
	}
	case FT_DECIMAL:
		v->kind_case = SHAHIDI__V1__VALUE__KIND_DECIMAL;
		v->decimal = (fd->has_range ? fd->min : 0) + (double)gen_below(r, 1000) / 100.0;
		break;
	case FT_BOOLEAN:
		v->kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
		v->boolean = gen_below(r, 4) != 0;
		break;
	case FT_DATE:
		v->kind_case = SHAHIDI__V1__VALUE__KIND_DATE;
		v->date = date_for(r, a, now_ms, fd->allow_future);
		break;
	case FT_DATETIME:
		v->kind_case = SHAHIDI__V1__VALUE__KIND_DATETIME;
		v->datetime = (int64_t)now_ms - (int64_t)gen_below(r, 86400000ull * 300);
		break;
	case FT_CHOICE:
		v->kind_case = SHAHIDI__V1__VALUE__KIND_CHOICE;
		v->choice = (char *)fd->choices[gen_below(r, fd->n_choices)].code;
		break;
	case FT_CHOICES: {
		Shahidi__V1__Choices *c = arena_alloc(a, sizeof(*c));
		size_t n = 1 + gen_below(r, SH_MIN(fd->n_choices, (size_t)3));
		char **codes = arena_alloc(a, n * sizeof(*codes));
		if (!c || !codes)
			return NULL;
		shahidi__v1__choices__init(c);
		size_t first = gen_below(r, fd->n_choices);
		for (size_t i = 0; i < n; i++) /* distinct: consecutive codes */
			codes[i] = (char *)fd->choices[(first + i) % fd->n_choices].code;
		c->codes = codes;
		c->n_codes = n;
		v->kind_case = SHAHIDI__V1__VALUE__KIND_CHOICES;
		v->choices = c;
		break;
	}
	case FT_GEOPOINT: {
		Shahidi__V1__GeoPoint *g = arena_alloc(a, sizeof(*g));
		if (!g)
			return NULL;
		shahidi__v1__geo_point__init(g);
		g->latitude = -4.5 + (double)gen_below(r, 900000) / 100000.0;
		g->longitude = 34.0 + (double)gen_below(r, 700000) / 100000.0;
		g->accuracy = 5 + (double)gen_below(r, 30);
		v->kind_case = SHAHIDI__V1__VALUE__KIND_GEOPOINT;
		v->geopoint = g;
		break;
	}
	case FT_ATTACHMENT: {
		Shahidi__V1__Attachment *at = arena_alloc(a, sizeof(*at));
		uint8_t *bytes = arena_alloc(a, 48);
		if (!at || !bytes)
			return NULL;
		shahidi__v1__attachment__init(at);
		for (int i = 0; i < 48; i++)
			bytes[i] = (uint8_t)gen_next(r);
		at->file_id = (ProtobufCBinaryData){16, bytes};
		at->sha256 = (ProtobufCBinaryData){32, bytes + 16};
		at->size = 10000 + gen_below(r, 2000000);
		at->media_type = "image/jpeg";
		v->kind_case = SHAHIDI__V1__VALUE__KIND_ATTACHMENT;
		v->attachment = at;
		break;
	}
	case FT_SEALED: {
		Shahidi__V1__Sealed *s = arena_alloc(a, sizeof(*s));
		size_t n = 64 + gen_below(r, 64);
		uint8_t *ct = arena_alloc(a, n);
		if (!s || !ct)
			return NULL;
		shahidi__v1__sealed__init(s);
		for (size_t i = 0; i < n; i++)
			ct[i] = (uint8_t)gen_next(r);
		s->ciphertext = (ProtobufCBinaryData){n, ct};
		v->kind_case = SHAHIDI__V1__VALUE__KIND_SEALED;
		v->sealed = s;
		break;
	}
	default:
		break;
	}
	return v;
}

/* Instances made so far for one report, per group: links name them. */
struct gen_made {
	const struct form_group *g;
	uint8_t ids[GEN_MAX_INSTANCES][16];
	size_t n;
};

static struct gen_made *made_of(struct gen_made *m, size_t n, const struct form_group *g)
{
	for (size_t i = 0; i < n; i++)
		if (m[i].g == g)
			return &m[i];
	return NULL;
}

int gen_instance_id(struct gen_rng *r, uint64_t now_ms, uint8_t ret_id[16])
{
	uint8_t rnd[10];
	for (int i = 0; i < 10; i++)
		rnd[i] = (uint8_t)gen_next(r);
	uuid_v7(now_ms, rnd, ret_id);
	return 0;
}

Shahidi__V1__Value *gen_link(struct arena *a, const uint8_t id[16])
{
	Shahidi__V1__Value *v = arena_alloc(a, sizeof(*v));
	uint8_t *b = arena_memdup(a, id, 16);
	if (!v || !b)
		return NULL;
	shahidi__v1__value__init(v);
	v->kind_case = SHAHIDI__V1__VALUE__KIND_LINK;
	v->link = (ProtobufCBinaryData){16, b};
	return v;
}

/* The writes of one new instance of g: about half its fields, every link
 * naming an instance already made of the group it links to. 0, or
 * -ENOENT when a link has nothing to name (no instance is made), or
 * -ENOMEM. */
static int gen_instance(struct gen_rng *r, struct arena *a, const struct form *f,
			const struct form_group *g, struct gen_made *made, size_t n_made,
			uint64_t now_ms, Shahidi__V1__FieldWrite **fws, size_t *n)
{
	uint8_t id[16];
	size_t start = *n;
	gen_instance_id(r, now_ms, id);
	uint8_t *idp = arena_memdup(a, id, 16);
	if (!idp)
		return -ENOMEM;
	for (size_t i = 0; i < f->n_fields; i++) {
		const struct form_field *fd = &f->fields[i];
		if (fd->group != g)
			continue;
		bool link = fd->type == FT_LINK;
		if (!link && start != *n && gen_below(r, 2) == 0)
			continue; /* the first field always: an instance has one */
		Shahidi__V1__FieldWrite *fw = arena_alloc(a, sizeof(*fw));
		if (!fw)
			return -ENOMEM;
		shahidi__v1__field_write__init(fw);
		fw->field = fd->number;
		fw->instance = (ProtobufCBinaryData){16, idp};
		if (link) {
			struct gen_made *to = made_of(made, n_made, fd->link_group);
			if (!to || !to->n) {
				*n = start;
				return -ENOENT;
			}
			fw->value = gen_link(a, to->ids[gen_below(r, to->n)]);
		} else {
			fw->value = gen_value(r, a, fd, now_ms);
		}
		if (!fw->value)
			return -ENOMEM;
		fws[(*n)++] = fw;
	}
	struct gen_made *m = made_of(made, n_made, g);
	if (m && m->n < GEN_MAX_INSTANCES)
		memcpy(m->ids[m->n++], id, 16);
	return 0;
}

Shahidi__V1__Change *gen_report(struct gen_rng *r, struct arena *a, const struct form *f,
				uint64_t change_id, uint64_t hlc, uint64_t now_ms)
{
	Shahidi__V1__Change *c = arena_alloc(a, sizeof(*c));
	uint8_t *id = arena_alloc(a, 16);
	/* the record's fields once, each group's up to GEN_MAX_INSTANCES times */
	size_t cap = f->n_fields * (f->n_groups ? GEN_MAX_INSTANCES : 1);
	Shahidi__V1__FieldWrite **fws = arena_alloc(a, cap * sizeof(*fws));
	struct gen_made *made = f->n_groups ? arena_zalloc(a, f->n_groups * sizeof(*made)) : NULL;
	if (!c || !id || !fws || (f->n_groups && !made))
		return NULL;
	shahidi__v1__change__init(c);
	uint8_t rnd[10];
	for (int i = 0; i < 10; i++)
		rnd[i] = (uint8_t)gen_next(r);
	uuid_v7(now_ms, rnd, id);
	c->change_id = change_id;
	c->record_id = (ProtobufCBinaryData){16, id};
	c->form_id = (char *)f->form_id;
	c->form_version = f->version;
	c->hlc = hlc;
	c->create = true;
	size_t n = 0;
	for (size_t i = 0; i < f->n_fields; i++) {
		const struct form_field *fd = &f->fields[i];
		if (fd->group)
			continue; /* below, in its instances */
		/* Reports are filled in part: about half of the optional fields,
		 * never attachments or sealed notes (those come later). About 1 KB
		 * per report, as in shared/reference/performance.md. */
		if (!fd->required &&
		    (fd->type == FT_ATTACHMENT || fd->type == FT_SEALED || gen_below(r, 2) == 0))
			continue;
		Shahidi__V1__FieldWrite *fw = arena_alloc(a, sizeof(*fw));
		if (!fw)
			return NULL;
		shahidi__v1__field_write__init(fw);
		fw->field = fd->number;
		if (!strcmp(fd->name, "status")) {
			Shahidi__V1__Value *v = arena_alloc(a, sizeof(*v));
			if (!v)
				return NULL;
			shahidi__v1__value__init(v);
			v->kind_case = SHAHIDI__V1__VALUE__KIND_CHOICE;
			v->choice = "submitted";
			fw->value = v;
		} else if (!strcmp(fd->name, "consent_documentation")) {
			Shahidi__V1__Value *v = arena_alloc(a, sizeof(*v));
			if (!v)
				return NULL;
			shahidi__v1__value__init(v);
			v->kind_case = SHAHIDI__V1__VALUE__KIND_BOOLEAN;
			v->boolean = true;
			fw->value = v;
		} else if (!(fw->value = gen_value(r, a, fd, now_ms))) {
			return NULL;
		}
		fws[n++] = fw;
	}
	/* Repeat groups, in definition order (a group links only to groups
	 * before it): 0-3 instances each, at least the group's min. */
	for (size_t gi = 0; gi < f->n_groups; gi++) {
		const struct form_group *g = &f->groups[gi];
		made[gi].g = g;
		uint64_t k = gen_below(r, 4);
		if (k < g->min)
			k = g->min;
		if (g->max && k > g->max)
			k = g->max;
		for (uint64_t i = 0; i < k && i < GEN_MAX_INSTANCES; i++) {
			int e = gen_instance(r, a, f, g, made, f->n_groups, now_ms, fws, &n);
			if (e == -ENOMEM)
				return NULL;
			if (e == -ENOENT)
				break; /* nothing to link to: no instance */
		}
	}
	c->fields = fws;
	c->n_fields = n;
	return c;
}

ProtobufCBinaryData gen_pack_value(struct arena *a, const Shahidi__V1__Value *v)
{
	size_t n = shahidi__v1__value__get_packed_size(v);
	uint8_t *p = arena_alloc(a, n ? n : 1);
	if (!p)
		return (ProtobufCBinaryData){0, NULL};
	shahidi__v1__value__pack(v, p);
	return (ProtobufCBinaryData){n, p};
}
