/* rebuild: a store's merged records made again from its change log.
 *
 * The log holds every change as received, so the merged state of every
 * record can be recomputed under the current merge rule (merge.h). This is
 * how a store of an older format (1 to 3, whose records were merged under
 * a rule that brought far-ahead stamps back to the server's clock and
 * ordered a device's writes by stamp) is brought to format 4: at the first
 * open for writing (rebuild_if_old), or by `shahidi rebuild`. Records that
 * point at their one change (pointer records) are already what the rule
 * makes of it and are left as they are.
 */
#ifndef SHAHIDI_REBUILD_H
#define SHAHIDI_REBUILD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct store;

struct rebuild_report {
	uint64_t records;        /* records in the store */
	uint64_t rebuilt;        /* of them, merged again from their log */
	uint8_t before[32];      /* store_records_digest before and after */
	uint8_t after[32];
};

/* Rebuilds every record. 0 or a negative error; on error the records
 * rebuilt so far stay rebuilt (each chunk is its own transaction, and a
 * rebuilt record is rebuilt again to the same state). */
int rebuild_records(struct store *s, struct rebuild_report *ret);

struct store_txn;
struct arena;
typedef struct Shahidi__Store__V1__Record Shahidi__Store__V1__Record;

/* Makes one record (as store_record_get gave it) again from its history
 * and writes it back, keeping where it is, its receipt metadata and its
 * assignments; erased changes count for nothing. */
int rebuild_record(struct store_txn *t, struct arena *a, Shahidi__Store__V1__Record *old);

/* Rebuilds when the store was opened at a format older than 4, telling
 * log (may be NULL) the digests before and after. 0 when nothing was to
 * do or it was done. */
int rebuild_if_old(struct store *s, FILE *log);

/* What verify found of the merged records. */
struct rebuild_check {
	uint64_t records;        /* checked */
	uint64_t erased;         /* of which erased (shahidi erase), each as erasure leaves one */
	bool bad;                /* a record differs from what its log makes */
	uint8_t bad_id[16];      /* the first that does */
	char why[120];
};

/* Makes every record again from the change log, in memory, and compares
 * it with the stored one (a pointer record with the change it points to):
 * what is served (exports, pulls, the status page) must be what the
 * hash-chained log says. 0 (then ret->bad says), or an error. Read only. */
int rebuild_verify(struct store *s, struct rebuild_check *ret);

/* Prints a report's digests and counts to f, one line. */
void rebuild_print(FILE *f, const char *who, const struct rebuild_report *r);

#endif
