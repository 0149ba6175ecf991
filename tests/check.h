/* A minimal test harness: each test program is one executable; a failed
 * CHECK prints where and why and exits 1 (so meson reports it), so the
 * first failure is the one reported. */
#ifndef SHAHIDI_CHECK_H
#define SHAHIDI_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                           \
	do {                                                                         \
		long long a_ = (long long)(a), b_ = (long long)(b);                  \
		if (a_ != b_) {                                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, a_, b_);                 \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                           \
	do {                                                                         \
		const char *a_ = (a), *b_ = (b);                                     \
		if (strcmp(a_, b_)) {                                                \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", \
				__FILE__, __LINE__, #a, #b, a_, b_);                 \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

/* Runs a test function, printing its name (meson shows it on failure). */
#define RUN(fn)                                      \
	do {                                         \
		fprintf(stderr, "-- %s\n", #fn);     \
		fn();                                \
	} while (0)

#endif
