/* export_dev: the names of the devices, for exports' device_names column
 * beside the devices' ids. Read once per export (a few hundred phones);
 * read-only afterwards, so rendering threads may share it. */
#ifndef SHAHIDI_EXPORT_DEV_H
#define SHAHIDI_EXPORT_DEV_H

#include <stdint.h>

#include "buf.h"

struct store;
struct export_dev;

/* Reads every device's name from s, in one short read transaction. */
int export_dev_load(struct store *s, struct export_dev **ret);
void export_dev_free(struct export_dev *d);

/* The name of device id (owned by d), or NULL when the store has no such
 * device. d may be NULL (no names: NULL). */
const char *export_dev_name(const struct export_dev *d, uint64_t id);

/* Appends the names of writers[0..n) joined by "; " (a device the store
 * does not know by its id). */
int export_dev_names(const struct export_dev *d, const uint64_t *writers, size_t n,
		     struct buf *out);

#endif
