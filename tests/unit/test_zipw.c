/* zipw: the streamed zip writer of the files' export. The archive is made
 * as if it started past 4 GiB (written into a sparse file at that offset:
 * a hole, no 4 GiB of data), so every entry's offset needs its zip64
 * field and the end needs the zip64 records; one entry holds 4 GiB + 1
 * bytes (a hole too) so its sizes are zip64 as well. Python's zipfile
 * reads every entry back (names, offsets, sizes, CRC-32s); Info-ZIP's
 * `unzip -t` tests the archives without the 4 GiB entry (it reads that a
 * byte at a time) and lists the one with it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "zipw.h"

#define GiB (1ull << 30)

struct sink {
	int fd;
	uint64_t at;
};

static void flush(struct sink *s, struct buf *b)
{
	CHECK(pwrite(s->fd, b->data, b->len, (off_t)s->at) == (ssize_t)b->len);
	s->at += b->len;
	buf_reset(b);
}

static void entry(struct zipw *z, struct sink *s, struct buf *b, const char *name,
		  const char *data, size_t n)
{
	CHECK(zipw_begin(z, name, n, b) == 0);
	CHECK(buf_append(b, data, n) == 0);
	zipw_data(z, data, n);
	CHECK(zipw_end(z, b) == 0);
	flush(s, b);
}

/* size bytes of zeros: counted and hashed, left as a hole in the file */
static void zeros(struct zipw *z, struct sink *s, struct buf *b, const char *name, uint64_t size)
{
	static uint8_t zero[1 << 20];
	CHECK(zipw_begin(z, name, size, b) == 0);
	flush(s, b);
	for (uint64_t left = size; left;) {
		size_t k = left < sizeof(zero) ? (size_t)left : sizeof(zero);
		zipw_data(z, zero, k);
		left -= k;
	}
	s->at += size;
	CHECK(zipw_end(z, b) == 0);
	flush(s, b);
}

static int run(const char *cmd)
{
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void check_archive(const char *path, uint64_t start, bool big)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 -c '\n"
		 "import sys, zipfile\n"
		 "z = zipfile.ZipFile(sys.argv[1])\n"
		 "want = [\"sha256/aa\", \"empty\", \"manifest.csv\"] + ([\"big\"] if sys.argv[3] == \"1\" else [])\n"
		 "names = [i.filename for i in z.infolist()]\n"
		 "assert names == want, names\n"
		 "assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())\n"
		 "assert z.getinfo(\"sha256/aa\").header_offset == int(sys.argv[2])\n"
		 "assert z.read(\"sha256/aa\") == b\"hello, evidence\"\n"
		 "assert z.read(\"empty\") == b\"\"\n"
		 "assert z.read(\"manifest.csv\") == b\"a,b\\r\\n\"\n"
		 "if sys.argv[3] == \"1\":\n"
		 "    assert z.getinfo(\"big\").file_size == 4 * 2**30 + 1\n"
		 "for i in z.infolist():\n"
		 "    with z.open(i) as f:  # read to its end: the CRC-32 is checked\n"
		 "        while f.read(1 << 24):\n"
		 "            pass\n"
		 "' %s %llu %d",
		 path, (unsigned long long)start, big);
	CHECK_EQ_INT(run(cmd), 0);
	if (access("/usr/bin/unzip", X_OK) == 0) {
		/* -t reads 4 GiB a byte at a time (half a minute): the big one
		 * is listed (its zip64 records parsed), Python checked its CRC */
		snprintf(cmd, sizeof(cmd), "/usr/bin/unzip %s %s >/dev/null", big ? "-lv" : "-tq",
			 path);
		CHECK_EQ_INT(run(cmd), 0);
	} else {
		fprintf(stderr, "   unzip is not installed (tools/dev setup): checked by Python only\n");
	}
}

static void make(uint64_t start, bool big)
{
	char dir[] = "/tmp/shahidi-zipw-XXXXXX", path[128];
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a.zip", dir);
	struct sink s = {open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), start};
	CHECK(s.fd >= 0);
	struct zipw z;
	struct buf b = {0};
	zipw_init(&z, start);
	entry(&z, &s, &b, "sha256/aa", "hello, evidence", 15);
	entry(&z, &s, &b, "empty", "", 0);
	/* a size other than promised is refused: a file that changed */
	CHECK(zipw_begin(&z, "manifest.csv", 3, &b) == 0);
	CHECK(zipw_begin(&z, "again", 0, &b) == -EINVAL);
	CHECK(buf_append(&b, "a,b\r\n", 5) == 0);
	zipw_data(&z, "a,b\r\n", 5);
	CHECK(zipw_end(&z, &b) == -EIO);
	z.promised = 5; /* as if it had been told right: the rest of the test */
	CHECK(zipw_end(&z, &b) == 0);
	flush(&s, &b);
	if (big)
		zeros(&z, &s, &b, "big", 4 * GiB + 1);
	CHECK(zipw_finish(&z, &b) == 0);
	flush(&s, &b);
	CHECK_EQ_INT(z.pos, s.at);
	close(s.fd);
	check_archive(path, start, big);
	unlink(path);
	rmdir(dir);
	buf_free(&b);
	zipw_free(&z);
}

static void test_plain(void)
{
	make(0, false);
}

static void test_zip64_offsets(void)
{
	make(5 * GiB, false);
}

static void test_zip64_entry(void)
{
	/* 4 GiB of CRC-32 and of reading back twice: seconds, not for valgrind */
	if (getenv("SHAHIDI_TEST_QUICK")) {
		fprintf(stderr, "   SHAHIDI_TEST_QUICK: the 4 GiB entry is left out\n");
		return;
	}
	make(0, true);
}

int main(void)
{
	RUN(test_plain);
	RUN(test_zip64_offsets);
	RUN(test_zip64_entry);
	return 0;
}
