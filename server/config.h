/* The server's configuration file: `key = value` lines whose keys are the
 * server's long flags (shahidi.conf.example lists them all). This module
 * only splits the file into entries and says where each came from; the
 * server gives each entry to the same code as the flag of that name, so a
 * key and its flag cannot drift apart. */
#ifndef SHAHIDI_CONFIG_H
#define SHAHIDI_CONFIG_H

#include <stddef.h>

/* The longest line a configuration file may have (bytes, newline
 * included); a longer one is refused rather than cut. */
#define CONFIG_LINE_MAX 4096

struct config_entry {
	const char *key;   /* points into the config's buffer */
	const char *value; /* points into the config's buffer; "" for `key =` */
	unsigned line;     /* 1-based line number in the file */
};

struct config {
	char *path;                 /* owned: the file read */
	struct config_entry *entries; /* owned: n of them, in file order */
	size_t n;
	char *buf;                  /* owned: the file's text, cut into keys and values */
};

/* Reads and splits path. Blank lines and lines starting with '#' (after
 * blanks) are skipped; every other line must be `key = value` with key
 * made of [a-z0-9-], each key at most once. On failure, err says
 * "PATH:LINE: why" (or "PATH: why") and the return is -ENOENT (no such
 * file: the caller decides whether that matters), -EINVAL (a bad line),
 * -EFBIG (a line or file too long) or another -errno. *ret_config is
 * written only on success and is the caller's to config_free(). */
int config_load(const char *path, struct config **ret_config, char *err, size_t errlen);

/* Frees a config; NULL is a no-op. */
void config_free(struct config *c);

/* "true", "yes", "on", "1" -> 1; "false", "no", "off", "0" -> 0; else -EINVAL. */
int config_bool(const char *value);

#endif
