/* iolog: an LD_PRELOAD shim that records, in order, what a process does to
 * its LMDB data file and its sockets, so a test can see whether an answer
 * left before the commit it acknowledges was on disk.
 *
 * SHAHIDI_IOLOG=FILE   one line per event, appended with O_APPEND:
 *     SEQ NS KIND FD ARG1 ARG2 [first bytes, hex]
 *   KIND  open    a data file opened      ARG1 = 1 if O_DSYNC/O_SYNC, ARG2 = 0
 *         dwrite  a write to it           ARG1 = offset (-1: file position), ARG2 = bytes
 *         dsync   fsync/fdatasync of it   ARG1 = 0, ARG2 = 0
 *         msync   msync of any mapping    ARG1 = 0, ARG2 = length
 *         swrite  a write/send on a socket ARG1 = 0, ARG2 = bytes, then up to 48
 *                 bytes of what was sent, in hex
 *   SEQ is a process-wide counter taken when the call returned (for a sync:
 *   once it has finished, so an answer after it in SEQ order came after the
 *   data was on disk); NS is CLOCK_MONOTONIC.
 * SHAHIDI_IOLOG_STALL_MS=N   sleep N ms after each write of an LMDB meta page
 *   (offset below 8 KiB): widens the window between a commit and its answer,
 *   so a test's SIGKILL can land in it.
 *
 * A "data file" is any file whose path ends in "data.mdb". Only the calls a
 * process makes through the dynamic linker are seen (LMDB's and libuv's are).
 * Test code only: it is never linked into anything that ships. */
/* Our own names for open/pwrite/...: no redirection to the *64 symbols
 * (those are defined separately below). */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 65536

static atomic_uchar fd_kind[MAX_FD]; /* 0 unknown, 1 data file, 2 other */
static atomic_ulong seq;
static atomic_int log_fd = -1;
static long stall_ms;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_msync)(void *, size_t, int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);

__attribute__((constructor)) static void iolog_init(void)
{
	real_write = dlsym(RTLD_NEXT, "write");
	real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
	real_writev = dlsym(RTLD_NEXT, "writev");
	real_pwritev = dlsym(RTLD_NEXT, "pwritev");
	real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
	real_send = dlsym(RTLD_NEXT, "send");
	real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	real_msync = dlsym(RTLD_NEXT, "msync");
	real_open = dlsym(RTLD_NEXT, "open");
	real_open64 = dlsym(RTLD_NEXT, "open64");
	real_openat = dlsym(RTLD_NEXT, "openat");
	real_openat64 = dlsym(RTLD_NEXT, "openat64");
	real_close = dlsym(RTLD_NEXT, "close");
	const char *path = getenv("SHAHIDI_IOLOG");
	if (path && *path && real_open) {
		int fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0 && fd < MAX_FD)
			fd_kind[fd] = 2;
		log_fd = fd;
	}
	const char *st = getenv("SHAHIDI_IOLOG_STALL_MS");
	stall_ms = st ? strtol(st, NULL, 10) : 0;
}

static void emit(const char *kind, int fd, long long a1, long long a2, const void *bytes,
		 size_t n)
{
	int lf = atomic_load(&log_fd);
	if (lf < 0 || !real_write)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned long s = atomic_fetch_add(&seq, 1);
	char line[256];
	int len = snprintf(line, sizeof line, "%lu %lld %s %d %lld %lld ", s,
			   (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, kind, fd, a1, a2);
	const unsigned char *b = bytes;
	for (size_t i = 0; i < n && i < 48 && len < (int)sizeof line - 3; i++)
		len += snprintf(line + len, sizeof line - len, "%02x", b[i]);
	line[len++] = '\n';
	(void)real_write(lf, line, (size_t)len); /* O_APPEND: one line, whole */
}

static bool is_data_path(const char *p)
{
	size_t n = p ? strlen(p) : 0;
	return n >= 8 && !strcmp(p + n - 8, "data.mdb");
}

static void note_open(int fd, const char *path, int flags)
{
	if (fd < 0 || fd >= MAX_FD)
		return;
	if (is_data_path(path)) {
		fd_kind[fd] = 1;
		emit("open", fd, (flags & (O_DSYNC | O_SYNC)) ? 1 : 0, 0, NULL, 0);
	} else {
		fd_kind[fd] = 2;
	}
}

/* 1: the data file; 3: a socket; 0: anything else. */
static int kind_of(int fd)
{
	if (fd < 0 || fd >= MAX_FD)
		return 0;
	int k = fd_kind[fd];
	if (k == 1)
		return 1;
	if (k == 2)
		return 0;
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
		return 3;
	return 0;
}

static void after_dwrite(int fd, long long off, ssize_t r)
{
	emit("dwrite", fd, off, r, NULL, 0);
	if (stall_ms > 0 && off >= 0 && off < 8192) {
		struct timespec ts = {stall_ms / 1000, (stall_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void note_write(int fd, long long off, const void *first, size_t first_len, ssize_t r)
{
	if (r <= 0)
		return;
	int k = kind_of(fd);
	if (k == 1)
		after_dwrite(fd, off, r);
	else if (k == 3)
		emit("swrite", fd, 0, r, first, first_len < (size_t)r ? first_len : (size_t)r);
}

#define OPEN_MODE(flags, mode)                                                                     \
	do {                                                                                       \
		if (((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE) {                   \
			va_list ap;                                                                \
			va_start(ap, flags);                                                       \
			mode = va_arg(ap, int);                                                    \
			va_end(ap);                                                                \
		}                                                                                  \
	} while (0)

int open(const char *path, int flags, ...)
{
	int mode = 0;
	OPEN_MODE(flags, mode);
	int fd = real_open(path, flags, mode);
	note_open(fd, path, flags);
	return fd;
}

int open64(const char *path, int flags, ...)
{
	int mode = 0;
	OPEN_MODE(flags, mode);
	int fd = (real_open64 ? real_open64 : real_open)(path, flags, mode);
	note_open(fd, path, flags);
	return fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
	int mode = 0;
	OPEN_MODE(flags, mode);
	int fd = real_openat(dirfd, path, flags, mode);
	note_open(fd, path, flags);
	return fd;
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	int mode = 0;
	OPEN_MODE(flags, mode);
	int fd = (real_openat64 ? real_openat64 : real_openat)(dirfd, path, flags, mode);
	note_open(fd, path, flags);
	return fd;
}

int close(int fd)
{
	if (fd >= 0 && fd < MAX_FD) {
		if (fd == atomic_load(&log_fd))
			return 0; /* the log stays open however the process tidies up */
		fd_kind[fd] = 0;
	}
	return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	ssize_t r = real_write(fd, buf, n);
	int e = errno;
	note_write(fd, -1, buf, n, r);
	errno = e;
	return r;
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	ssize_t r = real_send(fd, buf, n, flags);
	int e = errno;
	note_write(fd, -1, buf, n, r);
	errno = e;
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t r = real_pwrite(fd, buf, n, off);
	int e = errno;
	note_write(fd, off, buf, n, r);
	errno = e;
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t r = (real_pwrite64 ? real_pwrite64 : real_pwrite)(fd, buf, n, off);
	int e = errno;
	note_write(fd, off, buf, n, r);
	errno = e;
	return r;
}

static ssize_t vwrite_done(int fd, long long off, const struct iovec *iov, int cnt, ssize_t r)
{
	int e = errno;
	note_write(fd, off, cnt > 0 ? iov[0].iov_base : NULL, cnt > 0 ? iov[0].iov_len : 0, r);
	errno = e;
	return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	return vwrite_done(fd, -1, iov, cnt, real_writev(fd, iov, cnt));
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return vwrite_done(fd, off, iov, cnt, real_pwritev(fd, iov, cnt, off));
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return vwrite_done(fd, off, iov, cnt,
			   (real_pwritev64 ? real_pwritev64 : real_pwritev)(fd, iov, cnt, off));
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	ssize_t r = real_sendmsg(fd, m, flags);
	return vwrite_done(fd, -1, m->msg_iovlen ? m->msg_iov : NULL, (int)m->msg_iovlen, r);
}

static int sync_done(int fd, int r)
{
	int e = errno;
	if (r == 0 && kind_of(fd) == 1)
		emit("dsync", fd, 0, 0, NULL, 0);
	errno = e;
	return r;
}

int fsync(int fd)
{
	return sync_done(fd, real_fsync(fd));
}

int fdatasync(int fd)
{
	return sync_done(fd, real_fdatasync(fd));
}

int msync(void *addr, size_t len, int flags)
{
	int r = real_msync(addr, len, flags);
	int e = errno;
	if (r == 0 && (flags & MS_SYNC))
		emit("msync", -1, 0, (long long)len, NULL, 0);
	errno = e;
	return r;
}
