/* shahidi backup | restore.
 *
 * backup: a consistent, compacted copy of the store and its attachments
 * (store_backup), with progress on stderr for long runs.
 *
 * restore: the inverse of backup.
 * A restore is the moment an organisation finds out whether its backups
 * were good, often under pressure after a loss. So it checks before it
 * writes: the backup's hash chain and every record made again from it (as
 * `shahidi verify` does) and each attachment against the hash it is named
 * by. It builds the restored store in a staging directory inside DIR and
 * only then moves it into place, so a refusal or a crash half-way leaves
 * DIR as it was. It takes the server's lock (DATA/server.lock) for the
 * whole time: a running server is never written under, and none can start
 * on a half-restored store. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "rebuild.h"

/* dir/name into out; -ENAMETOOLONG rather than a cut path. */
static int pjoin(char *out, size_t len, const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	if (a + 1 + b >= len)
		return -ENAMETOOLONG;
	memcpy(out, dir, a);
	out[a] = '/';
	memcpy(out + a + 1, name, b + 1);
	return 0;
}

/* ---- backup ---- */

/* Progress of a backup: a thread watches the copy's data.mdb grow (LMDB's
 * copy has no progress callback) against the store's pages in use, which
 * the compacted copy does not exceed. */
struct backup_watch {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	bool tty;                 /* \r-updated line, else one line a second */
	char path[PATH_MAX];      /* DEST/data.mdb */
	uint64_t total;           /* bytes of the map in use */
};

static uint64_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static void backup_say(struct backup_watch *w, bool last)
{
	fprintf(stderr, "%sbackup: copied %.1f MB of at most %.1f MB%s", w->tty ? "\r" : "",
		(double)file_size(w->path) / 1e6, (double)w->total / 1e6,
		last || !w->tty ? "\n" : "");
}

static void *backup_watch_run(void *arg)
{
	struct backup_watch *w = arg;
	pthread_mutex_lock(&w->lock);
	while (!w->done) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += w->tty ? 250000000 : 0;
		until.tv_sec += w->tty ? 0 : 1;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT)
			backup_say(w, false);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static uint64_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t n = 0;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

int cmd_backup(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"progress", no_argument, 0, 'p'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA;
	bool progress = isatty(2);
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'p': progress = true; break;
		case 'h':
			fputs("Usage: shahidi backup [--data DIR] [--progress] DEST\n\n"
			      "Writes a consistent, compacted copy of the store into DEST, a new\n"
			      "directory, while the server keeps running (one LMDB read snapshot),\n"
			      "and the attachments into DEST/files (hard links where DEST is on the\n"
			      "same file system: attachments never change). Restore it with\n"
			      "'shahidi restore DEST --data DIR', which verifies it first. Encrypt\n"
			      "backups that leave the machine: they hold survivors' data.\n\n"
			      "  --data DIR   the store to back up (default ./shahidi-data)\n"
			      "  --progress   bytes copied on stderr (the default when stderr is a\n"
			      "               terminal)\n",
			      stdout);
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		cli_err("backup needs a destination directory (see --help)");
		return EXIT_USAGE;
	}
	const char *dest = argv[optind];
	if (strlen(dest) > PATH_MAX - 600) {
		cli_err("the destination's path is too long");
		return EXIT_USAGE;
	}
	struct store *s = cli_open_store(data, true);
	if (!s)
		return 1;
	struct backup_watch w = {.tty = isatty(2), .lock = PTHREAD_MUTEX_INITIALIZER,
				 .cond = PTHREAD_COND_INITIALIZER};
	pjoin(w.path, sizeof(w.path), dest, "data.mdb");
	struct store_txn *t;
	struct store_info info = {0};
	if (store_begin(s, false, &t) == 0) {
		store_info(t, &info);
		store_abort(t);
	}
	w.total = info.map_used;
	bool watching = progress && pthread_create(&w.thread, NULL, backup_watch_run, &w) == 0;
	char err[512];
	uint64_t t0 = sh_mono_ns();
	int r = store_backup(s, dest, err, sizeof(err));
	store_close(s);
	if (watching) {
		pthread_mutex_lock(&w.lock);
		w.done = true;
		pthread_cond_signal(&w.cond);
		pthread_mutex_unlock(&w.lock);
		pthread_join(w.thread, NULL);
	}
	if (r < 0) {
		if (watching && w.tty)
			fputc('\n', stderr);
		cli_err("%s", err);
		return 1;
	}
	char files[PATH_MAX];
	pjoin(files, sizeof(files), dest, "files/sha256");
	uint64_t n_files = count_files(files);
	if (progress) {
		backup_say(&w, true);
		fprintf(stderr, "backup: %" PRIu64 " attachment file(s)\n", n_files);
	}
	printf("backup written to %s in %.2f s: the store (%.1f MB), %" PRIu64
	       " attachment file(s)\n",
	       dest, (double)(sh_mono_ns() - t0) / 1e9, (double)file_size(w.path) / 1e6, n_files);
	return 0;
}

/* ---- restore ---- */

struct restore_stats {
	uint64_t files;
	uint64_t file_bytes;
	uint64_t store_bytes;
};

static void restore_progress(uint64_t done, uint64_t total, void *ud)
{
	(void)ud;
	fprintf(stderr, "\rverified %" PRIu64 " of %" PRIu64 " log entries", done, total);
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* Copies one attachment, hashing it on the way: -EBADMSG when its bytes
 * are not what its name (the hex SHA-256) says. The copy is synced. */
static int copy_checked(const char *from, const char *to, const char *name, uint64_t *ret_bytes)
{
	uint8_t want[32], got[32];
	size_t n;
	if (strlen(name) != 64 ||
	    sodium_hex2bin(want, 32, name, 64, NULL, &n, NULL) < 0 || n != 32)
		return -EBADMSG;
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int r = in < 0 || out < 0 ? -errno : 0;
	crypto_hash_sha256_state st;
	crypto_hash_sha256_init(&st);
	static uint8_t buf[1 << 16];
	uint64_t total = 0;
	ssize_t k;
	while (r == 0 && (k = read(in, buf, sizeof(buf))) != 0) {
		if (k < 0) {
			r = errno == EINTR ? 0 : -errno;
			continue;
		}
		crypto_hash_sha256_update(&st, buf, (size_t)k);
		for (ssize_t w = 0; r == 0 && w < k;) {
			ssize_t m = write(out, buf + w, (size_t)(k - w));
			if (m < 0 && errno != EINTR)
				r = -errno;
			w += m > 0 ? m : 0;
		}
		total += (uint64_t)k;
	}
	crypto_hash_sha256_final(&st, got);
	if (r == 0 && memcmp(got, want, 32))
		r = -EBADMSG;
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (r == 0)
		*ret_bytes = total;
	return r;
}

/* The backup's attachments (BACKUP/files/sha256/) into stage/files/sha256/,
 * each checked against its hash. */
static int copy_files(const char *backup, const char *stage, struct restore_stats *stats)
{
	char from[PATH_MAX], to[PATH_MAX];
	pjoin(from, sizeof(from), backup, "files/sha256");
	DIR *d = opendir(from);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	pjoin(to, sizeof(to), stage, "files");
	int r = mkdir(to, 0700) < 0 ? -errno : 0;
	pjoin(to, sizeof(to), stage, "files/sha256");
	if (r == 0 && mkdir(to, 0700) < 0)
		r = -errno;
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char a[PATH_MAX], b[PATH_MAX];
		uint64_t bytes = 0;
		pjoin(a, sizeof(a), from, e->d_name);
		pjoin(b, sizeof(b), to, e->d_name);
		r = copy_checked(a, b, e->d_name, &bytes);
		if (r == -EBADMSG) {
			cli_err("%s: attachment %s does not match its hash: the backup is damaged; "
				"not restored",
				backup, e->d_name);
			r = -ECANCELED; /* said */
		}
		stats->files += r == 0;
		stats->file_bytes += bytes;
	}
	closedir(d);
	if (r == 0)
		r = fsync_path(to);
	return r;
}

/* Removes a staging directory (what restore itself made: data.mdb,
 * lock.mdb, files/sha256/...). */
static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[PATH_MAX];
		pjoin(p, sizeof(p), path, e->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			remove_tree(p);
		else
			unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(path);
}

/* Gives what restore made the owner of DIR, when root restores into a
 * directory that belongs to the service's user (sudo shahidi restore ...
 * --data /var/lib/shahidi): otherwise the server could not open it. */
static void chown_tree(const char *path, uid_t uid, gid_t gid)
{
	if (lchown(path, uid, gid) < 0)
		return;
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[PATH_MAX];
		pjoin(p, sizeof(p), path, e->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			chown_tree(p, uid, gid);
		else
			lchown(p, uid, gid);
	}
	if (d)
		closedir(d);
}

/* The names in dir other than the server's lock file, earlier replaced-*
 * folders and restore's staging folder: 0 for none, 1 for some (first
 * names one), or -errno. */
static int dir_has_store(const char *dir, char *first, size_t len)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int r = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    !strcmp(e->d_name, "server.lock") || !strncmp(e->d_name, "replaced-", 9) ||
		    !strncmp(e->d_name, ".restoring-", 11))
			continue;
		snprintf(first, len, "%s", e->d_name);
		r = 1;
		break;
	}
	closedir(d);
	return r;
}

/* Removes the staging folders of restores that were killed: with the lock
 * held, no other restore is running. */
static void remove_stale_stages(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (strncmp(e->d_name, ".restoring-", 11))
			continue;
		char p[PATH_MAX];
		pjoin(p, sizeof(p), dir, e->d_name);
		remove_tree(p);
	}
	if (d)
		closedir(d);
}

/* Moves what is in dir (but the lock, the stage and earlier replaced-*
 * folders) into dir/aside. */
static int move_aside(const char *dir, const char *aside, const char *stage_name)
{
	char a[PATH_MAX];
	pjoin(a, sizeof(a), dir, aside);
	if (mkdir(a, 0700) < 0)
		return -errno;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int r = 0;
	while (r == 0 && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    !strcmp(e->d_name, "server.lock") || !strncmp(e->d_name, "replaced-", 9) ||
		    !strcmp(e->d_name, stage_name))
			continue;
		char from[PATH_MAX], to[PATH_MAX];
		pjoin(from, sizeof(from), dir, e->d_name);
		pjoin(to, sizeof(to), a, e->d_name);
		if (rename(from, to) < 0)
			r = -errno;
	}
	closedir(d);
	return r;
}

static void usage(FILE *out)
{
	fputs("Usage: shahidi restore BACKUP [--data DIR] [--force]\n\n"
	      "Restores a backup made by 'shahidi backup' into DIR (default\n"
	      "./shahidi-data), the data directory the server is then started on.\n"
	      "First verifies the backup as 'shahidi verify' does (the hash chain, and\n"
	      "every record made again from the log) and each attachment against its\n"
	      "hash; a backup that does not verify is not restored. The store and the\n"
	      "attachments are copied into DIR (made 0700 if missing) and synced, then\n"
	      "it prints what it restored.\n\n"
	      "Never while a server uses DIR (it holds DIR/server.lock): stop it first\n"
	      "(systemctl stop shahidi). DIR must be empty or missing, unless --force:\n"
	      "then what is in DIR is moved aside into DIR/replaced-TIME/ (delete it\n"
	      "once the restored store serves). Run as root into a directory owned by\n"
	      "the service's user, the restored files are given to that user.\n\n"
	      "  --data DIR   where to restore to\n"
	      "  --force      restore over a stopped store, moving it aside\n\n"
	      "Exit 0 when restored, 1 when refused or failed (nothing in DIR changed),\n"
	      "2 on bad usage.\n",
	      out);
}

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data", required_argument, 0, 'd'},
		{"force", no_argument, 0, 'f'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *data = CLI_DEFAULT_DATA;
	bool force = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'f': force = true; break;
		case 'h': usage(stdout); return 0;
		default: return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		cli_err("restore needs the backup's directory (see --help)");
		return EXIT_USAGE;
	}
	const char *backup = argv[optind];
	/* Then every path below (DIR/.restoring-PID/files/sha256/HASH) fits
	 * in PATH_MAX: none is ever cut. */
	if (strlen(backup) > PATH_MAX - 600 || strlen(data) > PATH_MAX - 600) {
		cli_err("the path of the backup or of --data is too long");
		return EXIT_USAGE;
	}
	int rc = 1, lockfd = -1, r;
	struct store *s = NULL;
	bool staged = false, made_dir = false, made_lock = false, made_backup_lock = false;
	char lockpath[PATH_MAX], backup_lock[PATH_MAX];
	char path[PATH_MAX], stage[PATH_MAX], real_b[PATH_MAX], real_d[PATH_MAX];
	char aside[64] = "", first[256];
	struct restore_stats stats = {0};
	struct store_info info = {0};
	struct stat st;

	/* ---- the backup: is it one, and does it verify? ---- */
	pjoin(path, sizeof(path), backup, "data.mdb");
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
		cli_err("%s holds no Shahidi store (no data.mdb): not a backup", backup);
		goto out;
	}
	if (realpath(backup, real_b) && realpath(data, real_d) && !strcmp(real_b, real_d)) {
		cli_err("%s is the backup itself: cannot restore a backup into itself", data);
		goto out;
	}
	/* LMDB makes BACKUP/lock.mdb to read it: with the owner of whoever
	 * runs restore (root, often), which would then keep the service's user
	 * from reading the backup. Removed at the end when restore made it. */
	pjoin(backup_lock, sizeof(backup_lock), backup, "lock.mdb");
	made_backup_lock = access(backup_lock, F_OK) < 0 && errno == ENOENT;
	if (!(s = cli_open_store(backup, true)))
		goto out;
	struct store_txn *t;
	if (store_begin(s, false, &t) == 0) {
		store_info(t, &info);
		store_abort(t);
	}
	bool tty = isatty(2);
	int64_t broken = store_verify_chain_each(s, tty ? restore_progress : NULL, NULL, NULL);
	if (tty)
		fputc('\n', stderr);
	if (broken != 0) {
		if (broken > 0)
			cli_err("%s: the hash chain breaks at log entry %" PRId64
				": the backup was altered or damaged; not restored",
				backup, broken);
		else
			cli_err("%s: cannot read the log: %s; not restored", backup,
				sh_strerror((int)broken));
		goto out;
	}
	char head[65];
	sh_hex(info.head_hash, 32, head);
	unsigned fmt = store_opened_format(s);
	if (fmt && fmt < STORE_FORMAT_REBUILD_BELOW) {
		/* Its records follow an older rule: the server merges them again
		 * from the log (just verified) when it first opens the store. */
		printf("verified %s: %" PRIu64 " log entries, hash chain intact, head %s; store "
		       "format %u: its %" PRIu64 " records are merged again from the log when the "
		       "server first opens it (format %u)\n",
		       backup, info.log_entries, head, fmt, info.records, STORE_FORMAT_VERSION);
	} else {
		struct rebuild_check chk;
		if ((r = rebuild_verify(s, &chk)) < 0 || chk.bad) {
			cli_err("%s: %s; not restored", backup, r < 0 ? sh_strerror(r) : chk.why);
			goto out;
		}
		printf("verified %s: %" PRIu64 " log entries, hash chain intact, head %s; %" PRIu64
		       " records, each made again from the log\n",
		       backup, info.log_entries, head, chk.records);
	}

	/* ---- DIR: ours alone, and empty unless --force ---- */
	if (mkdir(data, 0700) == 0)
		made_dir = true;
	else if (errno != EEXIST) {
		cli_err("cannot create %s: %s", data, strerror(errno));
		goto out;
	}
	pjoin(lockpath, sizeof(lockpath), data, "server.lock");
	lockfd = open(lockpath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (lockfd >= 0)
		made_lock = true;
	else if (errno == EEXIST)
		lockfd = open(lockpath, O_RDWR | O_CLOEXEC);
	if (lockfd < 0) {
		cli_err("%s: %s", lockpath, strerror(errno));
		goto out;
	}
	if (flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		cli_err("%s: a shahidi-server (or `shahidi erase`) is using this store: stop it "
			"first (systemctl stop shahidi); nothing was changed",
			data);
		goto out;
	}
	remove_stale_stages(data);
	r = dir_has_store(data, first, sizeof(first));
	if (r < 0) {
		cli_err("%s: %s", data, strerror(-r));
		goto out;
	}
	bool had_store = r > 0;
	if (had_store && !force) {
		cli_err("%s is not empty (it holds %s): --force restores over it, moving what "
			"is there aside; nothing was changed",
			data, first);
		goto out;
	}

	/* ---- staged inside DIR (same file system: renames), then moved in ---- */
	char stage_name[64];
	snprintf(stage_name, sizeof(stage_name), ".restoring-%ld", (long)getpid());
	pjoin(stage, sizeof(stage), data, stage_name);
	char err[512];
	staged = true;
	if (store_compact_copy(s, stage, err, sizeof(err)) < 0) {
		cli_err("%s", err);
		goto out;
	}
	pjoin(path, sizeof(path), stage, "data.mdb");
	if ((r = fsync_path(path)) < 0 || stat(path, &st) < 0) {
		cli_err("%s: %s", path, strerror(r < 0 ? -r : errno));
		goto out;
	}
	stats.store_bytes = (uint64_t)st.st_size;
	if ((r = copy_files(backup, stage, &stats)) < 0) {
		if (r != -ECANCELED)
			cli_err("cannot copy the attachments: %s; not restored", strerror(-r));
		goto out;
	}
	if (geteuid() == 0 && stat(data, &st) == 0 && st.st_uid != 0) {
		chown_tree(stage, st.st_uid, st.st_gid);
		if (made_lock && fchown(lockfd, st.st_uid, st.st_gid) < 0)
			cli_err("%s: cannot give it to the directory's owner: %s", lockpath,
				strerror(errno));
	}
	if (had_store) {
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(aside, sizeof(aside), "replaced-%Y%m%dT%H%M%SZ", &tm);
		if ((r = move_aside(data, aside, stage_name)) < 0) {
			cli_err("cannot move what is in %s aside into %s: %s", data, aside,
				strerror(-r));
			goto out;
		}
	}
	char to[PATH_MAX];
	pjoin(path, sizeof(path), stage, "data.mdb");
	pjoin(to, sizeof(to), data, "data.mdb");
	r = rename(path, to) < 0 ? -errno : 0;
	pjoin(path, sizeof(path), stage, "files");
	pjoin(to, sizeof(to), data, "files");
	if (r == 0 && stats.files && rename(path, to) < 0)
		r = -errno;
	if (r == 0)
		r = fsync_path(data);
	if (r < 0) {
		cli_err("cannot move the restored store into %s: %s", data, strerror(-r));
		goto out;
	}
	printf("restored into %s: the store (%.1f MB), %" PRIu64 " attachment file(s) (%.1f MB), "
	       "each matching its hash\n",
	       data, (double)stats.store_bytes / 1e6, stats.files, (double)stats.file_bytes / 1e6);
	if (aside[0])
		printf("moved what was in %s to %s/%s: delete it once the restored store serves\n",
		       data, data, aside);
	printf("start the server on it (systemctl start shahidi, or shahidi-server --data %s)\n",
	       data);
	rc = 0;
out:
	if (staged)
		remove_tree(stage);
	store_close(s);
	if (made_backup_lock)
		unlink(backup_lock);
	/* Refused or failed: DIR as it was, down to the lock file. */
	if (rc != 0 && made_lock)
		unlink(lockpath);
	if (rc != 0 && made_dir)
		rmdir(data);
	if (lockfd >= 0)
		close(lockfd);
	return rc;
}
