/* The server's configuration file (config.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config.h"

/* A configuration file is a few dozen lines; anything this big is not one. */
#define CONFIG_FILE_MAX (1024 * 1024)

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = 0;
	return s;
}

static int read_all(const char *path, char **ret_buf, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	struct stat st;
	char *buf = NULL;
	int r = 0;
	if (!f) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	if (fstat(fileno(f), &st) < 0)
		r = -errno;
	else if (S_ISDIR(st.st_mode))
		r = -EISDIR;
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		goto out;
	}
	/* Read to the end rather than trust st_size: /dev/null, pipes. */
	size_t len = 0, cap = 4096;
	buf = malloc(cap + 1);
	while (buf) {
		size_t got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
		if (len == cap) {
			if (cap >= CONFIG_FILE_MAX) {
				r = -EFBIG;
				snprintf(err, errlen, "%s: larger than %d bytes: not a configuration file",
					 path, CONFIG_FILE_MAX);
				goto out;
			}
			char *p = realloc(buf, cap * 2 + 1);
			if (!p)
				break;
			buf = p;
			cap *= 2;
		}
	}
	if (!buf) {
		r = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	if (ferror(f)) {
		r = -EIO;
		snprintf(err, errlen, "%s: cannot read it", path);
		goto out;
	}
	buf[len] = 0;
	if (strlen(buf) != len) {
		r = -EINVAL;
		snprintf(err, errlen, "%s: holds a NUL byte: not a configuration file", path);
		goto out;
	}
	*ret_buf = buf;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return r;
}

int config_load(const char *path, struct config **ret_config, char *err, size_t errlen)
{
	struct config *c = calloc(1, sizeof(*c));
	int r = 0;
	if (!c || !(c->path = strdup(path))) {
		snprintf(err, errlen, "%s: out of memory", path);
		r = -ENOMEM;
		goto fail;
	}
	if ((r = read_all(path, &c->buf, err, errlen)) < 0)
		goto fail;
	size_t lines = 1;
	for (const char *p = c->buf; *p; p++)
		lines += *p == '\n';
	c->entries = calloc(lines, sizeof(*c->entries));
	if (!c->entries) {
		snprintf(err, errlen, "%s: out of memory", path);
		r = -ENOMEM;
		goto fail;
	}
	char *line = c->buf;
	for (unsigned no = 1; line && *line; no++) {
		char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
		if (len > CONFIG_LINE_MAX) {
			snprintf(err, errlen, "%s:%u: line longer than %d bytes", path, no,
				 CONFIG_LINE_MAX);
			r = -EFBIG;
			goto fail;
		}
		if (nl)
			*nl = 0;
		char *s = trim(line);
		line = nl ? nl + 1 : NULL;
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, errlen, "%s:%u: expected 'key = value', got '%.64s'", path, no, s);
			r = -EINVAL;
			goto fail;
		}
		*eq = 0;
		char *key = trim(s), *value = trim(eq + 1);
		size_t kl = strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789-");
		if (!*key || key[kl]) {
			snprintf(err, errlen, "%s:%u: bad key '%.64s' (keys are the server's long "
					      "flags without '--', e.g. 'listen')",
				 path, no, key);
			r = -EINVAL;
			goto fail;
		}
		for (size_t i = 0; i < c->n; i++) {
			if (!strcmp(c->entries[i].key, key)) {
				snprintf(err, errlen, "%s:%u: key '%s' given again (first on line %u)",
					 path, no, key, c->entries[i].line);
				r = -EINVAL;
				goto fail;
			}
		}
		c->entries[c->n++] = (struct config_entry){.key = key, .value = value, .line = no};
	}
	*ret_config = c;
	return 0;
fail:
	config_free(c);
	return r;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	free(c->entries);
	free(c->buf);
	free(c->path);
	free(c);
}

int config_bool(const char *value)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(value, yes[i]))
			return 1;
		if (!strcasecmp(value, no[i]))
			return 0;
	}
	return -EINVAL;
}
