/* shahidi verify | checkpoint | erase: is what the store serves what its
 * hash-chained log says, and is that log the one an admin pinned?
 *
 * The chain proves the log was not altered after the fact, but its head
 * lives in the same directory: whoever can rewrite content can recompute
 * the whole chain. So an admin pins the chain outside the store: a head
 * noted on paper (`verify --expect-head`), or a checkpoint signed with an
 * Ed25519 key that never enters the data directory (`checkpoint sign`,
 * appended to the audit log and printed, `verify --checkpoint-key`). A
 * rewrite of anything before a checkpoint breaks it. Erasure drops content
 * and keeps the chain (erase.h). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "audit.h"
#include "cli.h"
#include "common.h"
#include "erase.h"
#include "rebuild.h"
#include "render.h"
#include "uuid.h"

struct checkpoint {
	uint64_t seq;
	uint8_t head[32];
	bool seen;  /* the chain's entry seq has this head */
};

struct walk {
	const uint8_t *expect;  /* --expect-head, or NULL */
	bool expect_found;
	uint64_t expect_seq;
	/* Every checkpoint read, however many (an admin who signs daily has
	 * hundreds, and the newest matter most), sorted by seq for the walk;
	 * owned, freed by walk_free. */
	struct checkpoint *cp;
	size_t n_cp, cap_cp;
	size_t next_cp; /* the first whose seq the walk has not passed */
};

static void walk_free(struct walk *w)
{
	free(w->cp);
	w->cp = NULL;
	w->n_cp = w->cap_cp = 0;
}

/* Room for one more checkpoint at w->cp[w->n_cp]. */
static int walk_room(struct walk *w)
{
	if (w->n_cp < w->cap_cp)
		return 0;
	size_t cap = w->cap_cp ? 2 * w->cap_cp : 64;
	struct checkpoint *cp = realloc(w->cp, cap * sizeof(*cp));
	if (!cp)
		return -ENOMEM;
	w->cp = cp;
	w->cap_cp = cap;
	return 0;
}

static int cp_cmp(const void *x, const void *y)
{
	const struct checkpoint *a = x, *b = y;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void verify_progress(uint64_t done, uint64_t total, void *ud)
{
	(void)ud;
	fprintf(stderr, "\rverified %" PRIu64 " of %" PRIu64 " log entries", done, total);
}

static void each_link(uint64_t seq, const uint8_t hash[32], void *ud)
{
	struct walk *w = ud;
	if (w->expect && !w->expect_found && !memcmp(hash, w->expect, 32)) {
		w->expect_found = true;
		w->expect_seq = seq;
	}
	/* links come in seq order, checkpoints are sorted: one pass */
	while (w->next_cp < w->n_cp && w->cp[w->next_cp].seq < seq)
		w->next_cp++;
	for (size_t i = w->next_cp; i < w->n_cp && w->cp[i].seq == seq; i++)
		if (!memcmp(w->cp[i].head, hash, 32))
			w->cp[i].seen = true;
}

static int parse_hex32(const char *s, uint8_t out[32])
{
	size_t n;
	return sodium_hex2bin(out, 32, s, strlen(s), NULL, &n, NULL) == 0 && n == 32 ? 0 : -EINVAL;
}

/* The message a checkpoint signs: what it pins, and when. */
static int cp_message(uint64_t seq, const char *head_hex, const char *time, char *out, size_t len)
{
	return snprintf(out, len, "shahidi checkpoint v1\nlog_seq %" PRIu64 "\nhead %s\ntime %s\n", seq,
			head_hex, time);
}

/* Reads one checkpoint (a JSON line of `checkpoint sign`), checking its
 * signature against pk. 1 when it is one and signed by pk, 0 when it is
 * another line, -EBADMSG when a checkpoint does not verify. */
static int cp_read(const char *line, const uint8_t pk[32], struct checkpoint *ret)
{
	json_t *j = json_loads(line, 0, NULL);
	const char *action = j ? json_string_value(json_object_get(j, "action")) : NULL;
	int r = 0;
	if (!action || strcmp(action, "checkpoint")) {
		json_decref(j);
		return 0;
	}
	const char *head = json_string_value(json_object_get(j, "head"));
	const char *time = json_string_value(json_object_get(j, "checkpoint_time"));
	const char *sig = json_string_value(json_object_get(j, "signature"));
	const char *key = json_string_value(json_object_get(j, "key"));
	json_t *jseq = json_object_get(j, "log_seq");
	uint8_t sb[64], kb[32];
	size_t n;
	char msg[256];
	r = -EBADMSG;
	if (head && time && sig && key && json_is_integer(jseq) &&
	    parse_hex32(head, ret->head) == 0 && parse_hex32(key, kb) == 0 &&
	    sodium_hex2bin(sb, 64, sig, strlen(sig), NULL, &n, NULL) == 0 && n == 64) {
		ret->seq = (uint64_t)json_integer_value(jseq);
		ret->seen = false;
		cp_message(ret->seq, head, time, msg, sizeof(msg));
		if (!memcmp(kb, pk, 32) &&
		    crypto_sign_verify_detached(sb, (const uint8_t *)msg, strlen(msg), pk) == 0)
			r = 1;
		else if (memcmp(kb, pk, 32))
			r = 0; /* signed with another key: not ours to judge */
	}
	json_decref(j);
	return r;
}

/* Checkpoints from the audit log and from a file of saved lines. */
static int load_checkpoints(struct store *s, const char *file, const uint8_t pk[32], struct walk *w,
			    size_t *ret_bad)
{
	struct store_txn *t;
	struct arena *a = arena_new();
	uint64_t seq = 0;
	char *json;
	int r;
	*ret_bad = 0;
	if (!a || store_begin(s, false, &t) < 0) {
		arena_free(a);
		return -EIO;
	}
	while ((r = store_audit_next(t, a, &seq, &json)) == 1 && (r = walk_room(w)) == 0) {
		int k = cp_read(json, pk, &w->cp[w->n_cp]);
		if (k < 0)
			(*ret_bad)++;
		w->n_cp += k == 1;
		arena_reset(a);
	}
	store_abort(t);
	arena_free(a);
	if (r < 0)
		return r;
	if (file) {
		FILE *f = fopen(file, "r");
		if (!f)
			return -errno;
		char line[1024];
		while (fgets(line, sizeof(line), f) && (r = walk_room(w)) == 0) {
			int k = cp_read(line, pk, &w->cp[w->n_cp]);
			if (k < 0)
				(*ret_bad)++;
			w->n_cp += k == 1;
		}
		fclose(f);
		if (r < 0)
			return r;
	}
	if (w->n_cp)
		qsort(w->cp, w->n_cp, sizeof(*w->cp), cp_cmp);
	return 0;
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"expect-head", required_argument, 0, 'e'},
		{"checkpoint-key", required_argument, 0, 'k'},
		{"checkpoint-file", required_argument, 0, 'f'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *expect = NULL, *key = NULL, *cpfile = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'e': expect = optarg; break;
		case 'k': key = optarg; break;
		case 'f': cpfile = optarg; break;
		case 'h':
			printf("Usage: shahidi verify [--data DIR] [--expect-head HEX]\n"
			       "                      [--checkpoint-key PUBLIC_KEY_HEX [--checkpoint-file FILE]]\n\n"
			       "Walks the change log and recomputes its hash chain: every entry's hash\n"
			       "covers the previous one, so any later change, removal or reordering of\n"
			       "the history breaks a link. Then makes every merged record again from\n"
			       "the log and compares it with the one the store serves (exports, pulls,\n"
			       "the status page), naming the first that differs. Prints a digest of all\n"
			       "records: two stores that received the same changes, in any order, print\n"
			       "the same one.\n\n"
			       "The chain's head lives in the store; to catch a rewrite that recomputed\n"
			       "the whole chain, pin it outside: --expect-head HEX (a head noted earlier:\n"
			       "the chain must still pass through it), or signed checkpoints\n"
			       "(shahidi checkpoint): --checkpoint-key checks every checkpoint in the\n"
			       "audit log and in FILE (saved lines) signed by that key.\n\n"
			       "Exit 0 when all holds, 1 when anything does not (it says what).\n");
			return 0;
		default:
			return 2;
		}
	}
	if (optind != argc) {
		cli_err("verify takes no operands (see --help)");
		return 2;
	}
	struct walk w = {0};
	uint8_t want[32], pk[32];
	if (expect && parse_hex32(expect, want) < 0) {
		cli_err("--expect-head takes a head of 64 hex digits, as verify printed it");
		return 2;
	}
	w.expect = expect ? want : NULL;
	if (key && parse_hex32(key, pk) < 0) {
		cli_err("--checkpoint-key takes a public key of 64 hex digits");
		return 2;
	}
	if (cpfile && !key) {
		cli_err("--checkpoint-file needs --checkpoint-key");
		return 2;
	}
	struct store *s = cli_open_store(data, true);
	if (!s)
		return 1;
	int rc = 1;
	size_t bad_cp = 0;
	if (key && load_checkpoints(s, cpfile, pk, &w, &bad_cp) < 0) {
		cli_err("cannot read the checkpoints");
		goto out;
	}
	struct store_txn *t;
	struct store_info info = {0};
	uint8_t records[32] = {0};
	uint64_t n_records = 0;
	struct arena *a = arena_new();
	if (a && store_begin(s, false, &t) == 0) {
		store_info(t, &info);
		store_records_digest(t, a, records, &n_records);
		store_abort(t);
	}
	arena_free(a);
	int64_t r = store_verify_chain_each(s, isatty(2) ? verify_progress : NULL, each_link, &w);
	if (isatty(2))
		fputc('\n', stderr);
	if (r < 0) {
		cli_err("cannot read the log: %s", sh_strerror((int)r));
		goto out;
	}
	if (r > 0) {
		printf("BROKEN: the hash chain breaks at log entry %" PRId64
		       ": the history was altered at or after it\n",
		       r);
		goto out;
	}
	char head[65], rd[65];
	sh_hex(info.head_hash, 32, head);
	sh_hex(records, 32, rd);
	printf("ok: %" PRIu64 " log entries, hash chain intact, head %s\n", info.log_entries, head);

	struct rebuild_check chk;
	int vr = rebuild_verify(s, &chk);
	if (vr < 0) {
		cli_err("cannot read the records: %s", sh_strerror(vr));
		goto out;
	}
	if (chk.bad) {
		static const uint8_t none[16];
		char id[UUID_STR_LEN + 1];
		uuid_fmt(chk.bad_id, id);
		if (memcmp(chk.bad_id, none, 16))
			printf("BROKEN: record %s differs from what the log makes: %s\n", id, chk.why);
		else
			printf("BROKEN: %s\n", chk.why);
		goto out;
	}
	printf("records: %" PRIu64 ", digest %s; each made again from the log: all equal\n",
	       n_records, rd);
	if (chk.erased)
		printf("erased: %" PRIu64 " record(s), each with only its erasure left "
		       "(who and why: shahidi audit)\n",
		       chk.erased);
	if (expect) {
		if (!w.expect_found) {
			printf("BROKEN: the chain does not pass through the expected head %s: the "
			       "history was rewritten\n",
			       expect);
			goto out;
		}
		printf("expected head found at log entry %" PRIu64 "\n", w.expect_seq);
	}
	if (key) {
		size_t ok = 0;
		for (size_t i = 0; i < w.n_cp; i++) {
			if (w.cp[i].seen) {
				ok++;
				continue;
			}
			sh_hex(w.cp[i].head, 32, head);
			printf("BROKEN: checkpoint of log entry %" PRIu64 " (head %s) does not match the "
			       "chain: the history was rewritten\n",
			       w.cp[i].seq, head);
			goto out;
		}
		if (bad_cp) {
			printf("BROKEN: %zu checkpoint(s) with this key do not verify: forged or altered\n",
			       bad_cp);
			goto out;
		}
		if (!ok) {
			printf("BROKEN: no checkpoint signed by this key was found\n");
			goto out;
		}
		printf("checkpoints: %zu signed by this key, all on the chain\n", ok);
	}
	rc = 0;
out:
	walk_free(&w);
	store_close(s);
	return rc;
}

static int read_key_file(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES])
{
	char hex[2 * crypto_sign_SECRETKEYBYTES + 8];
	FILE *f = fopen(path, "r");
	size_t n;
	if (!f)
		return -errno;
	char *ok = fgets(hex, sizeof(hex), f);
	fclose(f);
	if (!ok)
		return -EINVAL;
	hex[strcspn(hex, "\r\n")] = 0;
	if (sodium_hex2bin(sk, crypto_sign_SECRETKEYBYTES, hex, strlen(hex), NULL, &n, NULL) < 0 ||
	    n != crypto_sign_SECRETKEYBYTES)
		return -EINVAL;
	return 0;
}

/* Is path (a file, made or to be made) inside the directory dir? Both
 * resolved, so "DIR/sub/../k" and a symlinked DIR count. A dir that does
 * not exist holds nothing. */
static bool inside_dir(const char *dir, const char *path)
{
	char d[PATH_MAX], p[PATH_MAX], tmp[PATH_MAX];
	if (!realpath(dir, d))
		return false;
	if (!realpath(path, p)) {
		/* not there yet: its directory, then its name */
		snprintf(tmp, sizeof(tmp), "%s", path);
		if (!realpath(dirname(tmp), p))
			return false;
	}
	size_t n = strlen(d);
	return !strncmp(p, d, n) && (p[n] == '/' || p[n] == 0 || !strcmp(d, "/"));
}

int cmd_checkpoint(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"key", required_argument, 0, 'k'},
		{"out", required_argument, 0, 'o'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *keyfile = NULL, *out = NULL;
	const char *what = argc >= 2 ? argv[1] : "";
	int c;
	if (strcmp(what, "keygen") && strcmp(what, "sign")) {
		printf("Usage: shahidi checkpoint keygen [--data DIR] --out KEYFILE\n"
		       "       shahidi checkpoint sign [--data DIR] --key KEYFILE\n\n"
		       "Pins the hash chain outside the store. keygen makes an Ed25519 key pair:\n"
		       "the secret key goes to KEYFILE (mode 0600; keep it off this machine, e.g.\n"
		       "on the admin's; never inside DIR, where whoever rewrites the store could\n"
		       "use it too), the public key is printed. sign writes a checkpoint --\n"
		       "the last log entry's seq and head, the time, signed -- to the audit log\n"
		       "and prints it (save the line elsewhere too). `shahidi verify\n"
		       "--checkpoint-key PUBLIC` then fails if the history up to any checkpoint\n"
		       "was rewritten, even with the chain recomputed.\n");
		return !strcmp(what, "--help") || !strcmp(what, "-h") ? 0 : 2;
	}
	while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'k': keyfile = optarg; break;
		case 'o': out = optarg; break;
		default: return 2;
		}
	}
	if (sodium_init() < 0)
		return 1;
	/* The key pins the store from outside: kept beside it (or in its
	 * backups, which copy the directory) it pins nothing. */
	const char *kpath = !strcmp(what, "keygen") ? out : keyfile;
	if (kpath && inside_dir(data, kpath)) {
		cli_err("%s is inside the data directory %s: keep the checkpoint key outside the "
			"data directory (e.g. on the admin's USB stick)",
			kpath, data);
		return 2;
	}
	uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	char pkhex[2 * sizeof(pk) + 1];
	if (!strcmp(what, "keygen")) {
		if (!out) {
			cli_err("checkpoint keygen needs --out KEYFILE");
			return 2;
		}
		crypto_sign_keypair(pk, sk);
		char skhex[2 * sizeof(sk) + 1];
		sodium_bin2hex(skhex, sizeof(skhex), sk, sizeof(sk));
		int fd = open(out, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd < 0 || dprintf(fd, "%s\n", skhex) < 0 || close(fd) < 0) {
			cli_err("cannot write %s: %s", out, strerror(errno));
			return 1;
		}
		sodium_memzero(sk, sizeof(sk));
		sodium_memzero(skhex, sizeof(skhex));
		sodium_bin2hex(pkhex, sizeof(pkhex), pk, sizeof(pk));
		printf("public key %s\n", pkhex);
		return 0;
	}
	if (!keyfile) {
		cli_err("checkpoint sign needs --key KEYFILE");
		return 2;
	}
	if (read_key_file(keyfile, sk) < 0) {
		cli_err("%s holds no secret key made by `shahidi checkpoint keygen`", keyfile);
		return 1;
	}
	crypto_sign_ed25519_sk_to_pk(pk, sk);
	struct store *s = cli_open_store(data, true);
	if (!s)
		return 1;
	store_close(s);
	if (!(s = cli_open_store(data, false)))
		return 1;
	struct store_txn *t;
	struct store_info info;
	int r = store_begin(s, false, &t);
	if (r == 0) {
		r = store_info(t, &info);
		store_abort(t);
	}
	if (r < 0 || !info.log_entries) {
		cli_err(r < 0 ? "cannot read the store" : "the log is empty: nothing to pin");
		store_close(s);
		return 1;
	}
	char head[65], when[32], msg[256], sighex[129], actor[64];
	uint8_t sig[64];
	sh_hex(info.head_hash, 32, head);
	render_time_ms(sh_now_ms(), when);
	cp_message(info.log_entries, head, when, msg, sizeof(msg));
	crypto_sign_detached(sig, NULL, (const uint8_t *)msg, strlen(msg), sk);
	sodium_memzero(sk, sizeof(sk));
	sodium_bin2hex(sighex, sizeof(sighex), sig, sizeof(sig));
	sodium_bin2hex(pkhex, sizeof(pkhex), pk, sizeof(pk));
	json_t *d = json_pack("{s:I,s:s,s:s,s:s,s:s}", "log_seq", (json_int_t)info.log_entries, "head",
			      head, "checkpoint_time", when, "key", pkhex, "signature", sighex);
	audit_cli_actor(actor);
	char *line = json_dumps(d, JSON_COMPACT);
	r = audit_record(s, actor, "checkpoint", d);
	store_close(s);
	if (r < 0) {
		cli_err("cannot write the checkpoint to the audit log: %s", sh_strerror(r));
		free(line);
		return 1;
	}
	/* the line verify reads (action added), to keep outside the store */
	printf("{\"action\":\"checkpoint\",%s\n", line ? line + 1 : "}");
	free(line);
	return 0;
}

int cmd_erase(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"as", required_argument, 0, 'a'},
		{"record", required_argument, 0, 'r'},
		{"reason", required_argument, 0, 'R'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA, *as = NULL, *rid = NULL, *reason = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'a': as = optarg; break;
		case 'r': rid = optarg; break;
		case 'R': reason = optarg; break;
		case 'h':
			printf("Usage: shahidi erase [--data DIR] --as ADMIN_DEVICE --record ID --reason TEXT\n\n"
			       "Erases a record at its data subject's request (Kenya Data Protection Act\n"
			       "2019, s.40): drops the content of every change of the record from the\n"
			       "log, keeping each change's digest so that the hash chain still\n"
			       "verifies; appends an erasure change that the record's other holders pull\n"
			       "(their app removes it); turns the record into an empty tombstone; writes\n"
			       "the reason to the audit log; then compacts the store file so that no copy\n"
			       "of the erased text is left in it. The record's attachments go too:\n"
			       "each file (complete or half uploaded) is deleted from DIR/files unless\n"
			       "a record that is not erased names the same bytes; downloads of them\n"
			       "answer 410 file_erased. The server must be stopped (the store\n"
			       "file is rewritten). Backups taken before keep what they held: erase\n"
			       "there too, or destroy them. ADMIN_DEVICE is an admin's device id.\n");
			return 0;
		default:
			return 2;
		}
	}
	uint8_t id[16];
	uint64_t actor;
	if (!as || !rid || !reason || !*reason || optind != argc) {
		cli_err("erase needs --as ADMIN_DEVICE, --record ID and --reason TEXT (see --help)");
		return 2;
	}
	if (uuid_parse(rid, id) < 0 || sh_device_parse(as, &actor) < 0) {
		cli_err("--record takes a record UUID, --as a device id of 16 hex digits");
		return 2;
	}
	struct store *s = cli_open_store(data, true); /* only an existing store */
	if (!s)
		return 1;
	store_close(s);
	char lockpath[4096];
	snprintf(lockpath, sizeof(lockpath), "%s/server.lock", data);
	int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		cli_err("%s", errno == EWOULDBLOCK
				      ? "a server is running on this store: stop it first (erasure rewrites "
					"the store file)"
				      : strerror(errno));
		if (lockfd >= 0)
			close(lockfd);
		return 1;
	}
	int rc = 1;
	if (!(s = cli_open_store(data, false)))
		goto out;
	struct store_txn *t;
	struct arena *a = arena_new();
	store_device_t *dev = NULL;
	int r = a ? store_begin(s, false, &t) : -ENOMEM;
	if (r == 0) {
		r = store_device_get(t, a, actor, &dev);
		bool admin = r == 0 && dev->role == ROLE_ADMIN && !dev->revoked;
		store_abort(t);
		if (r == 0 && !admin)
			r = -EPERM;
	}
	arena_free(a);
	if (r < 0) {
		cli_err(r == -EPERM || r == -ENOENT ? "--as %s is not an admin device in service"
						    : "cannot read the devices: %s",
			r == -EPERM || r == -ENOENT ? as : sh_strerror(r));
		store_close(s);
		goto out;
	}
	char actor_name[64];
	snprintf(actor_name, sizeof(actor_name), "device:%s", as);
	struct erase_report rep;
	r = erase_record(s, id, actor, actor_name, reason, sh_now_ms(), &rep);
	store_close(s);
	if (r == -ENOENT || r == -EALREADY) {
		cli_err(r == -ENOENT ? "no record %s" : "record %s was erased before", rid);
		goto out;
	}
	bool files_left = r == -EREMOTEIO; /* erased: compacted all the same */
	if (files_left)
		r = 0;
	if (r < 0) {
		cli_err("cannot erase: %s", sh_strerror(r));
		goto out;
	}
	char err[512];
	if ((r = erase_compact(data, err, sizeof(err))) < 0) {
		cli_err("erased, but the store could not be compacted (the erased bytes may linger "
			"in free pages until it is): %s",
			err);
		goto out;
	}
	printf("erased record %s: the content of %" PRIu64 " change(s) dropped from the log "
	       "(their digests kept: the chain verifies), erasure change at log entry %" PRIu64
	       "; the store file compacted\n",
	       rid, rep.changes, rep.log_seq);
	if (!rep.attachments)
		printf("attachments: none\n");
	else
		printf("attachments: %" PRIu64 " file(s) removed, %" PRIu64
		       " kept (named by a record not erased), %" PRIu64
		       " upload(s) in progress dropped\n",
		       rep.files_removed, rep.files_kept, rep.uploads_dropped);
	if (files_left) {
		cli_err("some of the erased record's files could not be deleted from %s/files "
			"(the next erasure tries again)",
			data);
		goto out;
	}
	rc = 0;
out:
	close(lockfd);
	return rc;
}
