#include "export_dev.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "store.h"

struct dev_name {
	uint64_t id;
	char *name;                   /* owned */
};

struct export_dev {
	struct dev_name *v;           /* sorted by id */
	size_t n;
};

static int cmp_dev(const void *a, const void *b)
{
	const struct dev_name *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

int export_dev_load(struct store *s, struct export_dev **ret)
{
	struct export_dev *d = calloc(1, sizeof(*d));
	struct arena *a = arena_new();
	struct store_txn *txn = NULL;
	int r = d && a ? store_begin(s, false, &txn) : -ENOMEM;
	if (r < 0)
		goto out;
	uint64_t id = 0;
	store_device_t *dv;
	while ((r = store_device_next(txn, a, &id, &dv)) == 1) {
		struct dev_name *nv = realloc(d->v, (d->n + 1) * sizeof(*nv));
		if (!nv) {
			r = -ENOMEM;
			break;
		}
		d->v = nv;
		if (!(nv[d->n].name = strdup(dv->name ? dv->name : ""))) {
			r = -ENOMEM;
			break;
		}
		nv[d->n++].id = dv->id;
		arena_reset(a);
	}
	store_abort(txn);
	if (r >= 0) {
		if (d->n) /* qsort of NULL is undefined, even for none */
			qsort(d->v, d->n, sizeof(*d->v), cmp_dev);
		*ret = d;
		d = NULL;
		r = 0;
	}
out:
	export_dev_free(d);
	arena_free(a);
	return r;
}

void export_dev_free(struct export_dev *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	free(d);
}

const char *export_dev_name(const struct export_dev *d, uint64_t id)
{
	size_t lo = 0, hi = d ? d->n : 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (d->v[mid].id == id)
			return d->v[mid].name;
		if (d->v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int export_dev_names(const struct export_dev *d, const uint64_t *writers, size_t n,
		     struct buf *out)
{
	char hex[17];
	int r = 0;
	for (size_t i = 0; i < n && r >= 0; i++) {
		const char *name = export_dev_name(d, writers[i]);
		if (!name) {
			sh_device_fmt(writers[i], hex);
			name = hex;
		}
		if (i)
			r = buf_append(out, "; ", 2);
		if (r >= 0)
			r = buf_puts(out, name);
	}
	return r;
}
