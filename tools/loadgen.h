/* shahidi-loadgen: the device simulator and load generator.
 *
 * A run has four steps, each in its own file:
 *   loadgen.c         options, tokens (enrolment or a file), the report
 *   loadgen_work.c    the workload: every device's batches, made before the
 *                     clock starts and kept compressed in memory, so that
 *                     making reports does not compete with the server for
 *                     the machine's cores while it is being measured
 *   loadgen_net.c     one libuv loop driving one keep-alive HTTP/1.1
 *                     connection per device: push every batch, then pull
 *   loadgen_verify.c  every acknowledged change is in the store exactly
 *                     once, and the conflicts the workload made exist
 *
 * Everything lives in one struct lg_run, owned by main() for the whole run.
 */
#ifndef SHAHIDI_LOADGEN_H
#define SHAHIDI_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "form.h"
#include "hlc.h"

#define LG_FIELD_RISK 140       /* risk_level: choice */
#define LG_FIELD_CASEWORKER 142 /* caseworker: text */
/* --groups (form version 3): the fields its changes write */
#define LG_FIELD_VICTIM_AGE 205   /* victims.victim_age: integer */
#define LG_FIELD_PERP_INST 220    /* perpetrators.perpetrator_institution */
#define LG_FIELD_PERP_COUNT 221   /* perpetrators.perpetrator_count */

/* What a change does. Shared records are created by device 0 in its first
 * batch; every device edits them, so that edits conflict. */
enum lg_kind {
	LG_CREATE = 1,
	LG_EDIT,          /* fields 140 and/or 142 of one of its own records */
	LG_DELETE,
	LG_UNDELETE,
	LG_INST_EDIT,     /* --groups: the age of its record's first victim */
	LG_INST_REMOVE,   /* --groups: its record's first source removed, having
			     seen it (nothing links to a source: no flag) */
	/* from here on, changes to device 0's shared records */
	LG_SHARED_CREATE, /* device 0 only */
	LG_SHARED_EDIT,   /* field 140 of a shared record */
	LG_SHARED_ADD,    /* --groups: a perpetrator added to a shared record,
			     by every device at once: add-wins, no conflict */
};

/* What became of a change. */
enum lg_status {
	LG_UNSENT = 0,  /* never sent (time bound): must not be stored */
	LG_FAILED,      /* its batch was refused (4xx): must not be stored */
	LG_IN_DOUBT,    /* sent, never answered: stored at most once */
	LG_APPLIED,     /* acknowledged: stored exactly once */
	LG_DUPLICATE,   /* acknowledged: stored exactly once */
	LG_REJECTED,    /* refused by the server: must not be stored */
};

static inline bool lg_acked(uint8_t status)
{
	return status == LG_APPLIED || status == LG_DUPLICATE;
}

struct lg_change {
	uint32_t rec;   /* index into its record owner's recs: device 0 for
			   LG_SHARED_*, else the device itself */
	uint8_t kind;   /* enum lg_kind */
	uint8_t status; /* enum lg_status */
	uint8_t fields; /* LG_EDIT: bit 0 = field 140, bit 1 = field 142 */
};

struct lg_record {
	uint8_t id[16];
	/* The workload's view of the record while it is being made, as the
	 * phone that owns it sees it: the stamp of the last value it wrote
	 * to field 140 and 142 (0 = never set) and to the deletion register. */
	uint64_t stamp_risk, stamp_caseworker, stamp_del;
	bool deleted;
};

/* --groups: the instances of a record the workload edits (its first
 * victim) and removes (its first source: a victim's removal would flag
 * the acts that link to it), as the phone that owns the record sees them. */
struct lg_inst {
	uint8_t id[16];     /* the victim */
	uint8_t src[16];    /* the source */
	uint64_t made;      /* the create's stamp: their values' */
	uint64_t stamp_age; /* its last write of victim_age, 0 = never */
	bool has, has_src, src_removed;
};

struct lg_batch {
	uint64_t seq;
	size_t first;   /* index of its first change in the device's changes */
	uint32_t n;
	uint8_t *body;  /* the deflated PushBatch, owned; the same bytes on
			   every retry so that the server can deduplicate */
	size_t len;
};

struct lg_conn;

struct lg_device {
	struct lg_run *run;
	unsigned idx;
	uint64_t id;
	char token[128];
	uint64_t first_change_id; /* change ids are first_change_id + index */
	uint64_t first_batch_seq;
	struct lg_record *recs;   /* records it created, in order */
	struct lg_inst *insts;    /* --groups: one per record, else NULL */
	size_t n_recs;
	struct lg_change *changes;
	size_t n_changes;
	struct lg_batch *batches;
	size_t n_batches;
	/* The stamp of its last edit of each shared record (0 = none yet):
	 * the base of its next edit, as on a phone that pulled the record. */
	uint64_t *shared_seen;
	struct hlc clock;
	uint64_t raw_bytes, body_bytes; /* its batches: protobuf, deflated */
	struct lg_conn *conn;     /* loadgen_net.c */
	uint64_t pulled;          /* changes pulled from its feed */
	bool pull_ok;             /* its feed was read to the end */
};

/* A small map of counts by name: errors by kind, rejections by code. */
struct lg_counter {
	char key[48];
	uint64_t n;
};
struct lg_counters {
	struct lg_counter *v;
	size_t n, cap;
};
/* Adds n to the count of key (cut at 47 bytes). 0 or -ENOMEM. */
int lg_count(struct lg_counters *c, const char *key, uint64_t n);
void lg_counters_free(struct lg_counters *c);

struct lg_opts {
	const char *server;       /* http://HOST[:PORT] */
	unsigned devices;
	unsigned batch;
	uint64_t changes;         /* per device */
	double seconds;
	double rate;              /* changes/s offered; 0 = as fast as answered */
	uint64_t seed;
	const char *data;
	const char *tokens;
	bool json;
	int server_pid;           /* 0 = none */
	bool verify;
	unsigned shared;          /* shared records */
	unsigned timeout_ms;      /* per request */
	unsigned retries;
	unsigned pct_edit, pct_shared, pct_delete; /* of changes, in 1/1000 */
	/* --groups (form version 3; 0 0 0 and version 1 without it): edits
	 * and removals of instances of its own records, adds of instances to
	 * shared records, in 1/1000 */
	bool groups;
	unsigned pct_gedit, pct_gadd, pct_gremove;
	int level;                /* deflate level */
	const char *metrics_token; /* $SHAHIDI_METRICS_TOKEN (a metrics role's
				      token, kept off the command line), or
				      NULL: the writer's counters are read at
				      the push's start and end */
};

/* The writer's counters read from /metrics (lg_writer_counters). */
enum {
	LG_COMMITS,       /* shahidi_commit_seconds_count */
	LG_COMMIT_S,      /* shahidi_commit_seconds_sum */
	LG_JOBS,          /* shahidi_group_commit_jobs_sum */
	LG_COMMIT_CPU_S,  /* shahidi_commit_cpu_seconds_total */
	LG_APPLY_CPU_S,   /* shahidi_commit_apply_cpu_seconds_total */
	LG_WINDOW_HOLDS,  /* shahidi_commit_window_holds_total */
	LG_WRITER_N
};

struct lg_stats {
	uint64_t gen_ns;
	uint64_t raw_bytes, body_bytes;   /* batches as made: protobuf, deflated */
	uint64_t push_start_ns, push_end_ns, pull_start_ns, pull_end_ns;
	uint64_t attempts, batches_acked, batches_failed;
	uint64_t applied, duplicate, rejected, in_doubt, failed, unsent;
	uint64_t push_sent_bytes, push_recv_bytes;
	uint64_t pull_requests, pulled, pull_sent_bytes, pull_recv_bytes;
	uint32_t *lat_us;                 /* one per acknowledged batch */
	uint32_t *lat_at_ms;              /* when each was sent, ms after the push began */
	size_t n_lat;
	struct lg_counters errors;        /* "connect", "timeout", "http_503"... */
	struct lg_counters rejections;    /* by the server's code */
	uint64_t rss_max_kb, rss_final_kb;
	uint64_t anon_max_kb, anon_final_kb;
	uint64_t mapped_max_kb;           /* RSS less anonymous: mapped files */
	double server_cpu_s;              /* during the push phase; < 0 = unknown */
	double self_cpu_s;                /* ours, during the push phase */
	double steal_s;                   /* the machine's CPU time taken by the
					     hypervisor during the push, all
					     cores; < 0 = unknown */
	bool rss_known;
	/* The server's writer counters (/metrics) at the push's start and
	 * end: what the push alone cost it, without the pulls after it. */
	double writer0[LG_WRITER_N], writer1[LG_WRITER_N];
	bool writer_known;
};

struct lg_verify {
	bool ran;
	bool ok;
	char why[512];                    /* "VERIFY FAILED: " + why */
	uint64_t log_before, log_after;
	uint64_t changes;                 /* acknowledged changes found once */
	uint64_t records;
	uint64_t conflicted;              /* records with open conflicts, as expected */
	uint64_t expected_conflicted;
};

struct store_txn;

struct lg_run {
	struct lg_opts o;
	const struct form *form;
	struct form_registry *forms;
	struct lg_device *dev;
	unsigned n_dev;
	/* The server's address, resolved once. */
	struct sockaddr_storage addr;
	char host_hdr[300];
	uint64_t total_batches;
	unsigned n_shared;              /* device 0's first n_shared records */
	uint64_t *shared_create_hlc;    /* their creates' stamps */
	struct lg_stats st;
	struct lg_verify v;
};

/* loadgen_work.c: makes every device's changes and batches (dev[i].id and
 * first ids must be set), on as many threads as there are cores. 0 or
 * -ENOMEM. */
int lg_work_make(struct lg_run *run);
void lg_work_free(struct lg_run *run);

/* loadgen_net.c: runs the push and pull phases to the end. 0, or a
 * negative errno when the loop itself failed (not for a server's errors,
 * which are counted). */
int lg_net_run(struct lg_run *run);

/* loadgen.c: assigns device 0's shared records to every other device in
 * the store (a phone may change only records it created or was assigned,
 * as a coordinator would assign them); nothing when the run has no store
 * of its own (--tokens). 0 or a negative errno. */
int lg_assign_shared(struct lg_run *run);
/* The same in a write transaction of the caller's (store_write's fn; ud
 * is the run): device 0's shared records to every other device. */
int lg_assign_txn(struct store_txn *t, void *ud);

/* loadgen_verify.c: checks the store in dir against what the server
 * acknowledged; fills run->v. 0, or a negative errno when the store could
 * not be read (run->v.why says why). */
int lg_verify_store(struct lg_run *run, const char *dir);

/* Reads VmRSS of a process, and RssAnon (its own memory, without the
 * pages of mapped files such as the store's map), in KiB. 0 or a
 * negative errno. */
int lg_proc_rss_kb(int pid, uint64_t *ret_kb, uint64_t *ret_anon_kb);
/* utime + stime of a process, in seconds. 0 or a negative errno. */
int lg_proc_cpu_s(int pid, double *ret_s);
/* The machine's steal time since boot (/proc/stat: time its virtual CPUs
 * were ready to run and the hypervisor ran something else), in seconds
 * summed over cores. 0 or a negative errno. */
int lg_steal_s(double *ret_s);
/* The writer's counters from server's /metrics, read with a metrics
 * token, into out (indexed by LG_COMMITS...). 0 or a negative errno
 * (-EPROTO: an answer without them). Blocking, at most 5 s. */
int lg_writer_counters(const char *server, const char *token, double out[LG_WRITER_N]);

#endif
