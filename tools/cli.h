/* Shared helpers of the `shahidi` command-line tool. */
#ifndef SHAHIDI_CLI_H
#define SHAHIDI_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "form.h"
#include "store.h"

#define CLI_DEFAULT_DATA "shahidi-data"

/* Exit codes: 0 done, 1 failed, 2 bad usage. */
#define EXIT_USAGE 2

struct cli_cmd {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
};

/* Prints "shahidi: " and the message to stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parses the options of a command that takes only --data DIR (and --help,
 * which prints help): false when the command is to return *ret at once.
 * Leaves optind at its first argument. */
bool cli_data_only(int argc, char **argv, const char *help, const char **data, int *ret);
/* Opens the store in dir; prints why not and returns NULL on failure. */
struct store *cli_open_store(const char *dir, bool read_only);
/* Opens for writing a store that must already exist: a directory that
 * holds none is refused, and nothing is created in it. For commands that
 * read what is there and only record what they did (export, resolve). */
struct store *cli_open_existing_store(const char *dir);
/* The built-in forms plus those in extra (file or directory; may be NULL). */
struct form_registry *cli_load_forms(const char *extra);
/* Reads a whole file (or stdin for "-") into a malloc'd buffer. */
int cli_read_file(const char *path, uint8_t **ret, size_t *ret_len);
int cli_write_file(const char *path, const uint8_t *p, size_t n);

/* Decodes and applies one push batch as `ingest` does, printing the
 * results. Returns an exit code. */
int cli_ingest_bytes(struct store *s, const struct form_registry *reg, const uint8_t *body,
		     size_t len, bool quiet);
/* Prints each change's result of an encoded PushResponse, then a summary
 * (quiet: only rejections and the summary). 0 or -EPROTO. */
int cli_print_push_response(const uint8_t *p, size_t n, bool quiet);
/* The token from --token, --token-file or $SHAHIDI_TOKEN (in that order),
 * or NULL after printing why not. Prefer the file or the variable: command
 * lines are visible to other users in ps. */
const char *cli_token(const char *arg, const char *file);

/* Prints a merged record for people (conflicts_only: just its conflicts). */
void cli_print_record(const merge_rec_t *rec, const struct form *f, bool conflicts_only);

/* "042,047" -> an array of at most max codes, in a static buffer. */
size_t cli_parse_counties(const char *arg, const char **out, size_t max);
/* 0 when every code is in the county vocabulary of a loaded form (of
 * form_id when given); otherwise prints the codes that are and returns
 * EXIT_USAGE. An unknown code would silently select nothing. */
int cli_check_counties(const struct form_registry *reg, const char *form_id,
		       const char *const *codes, size_t n);

int cmd_demo(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_conflicts(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_rebuild(int argc, char **argv);
int cmd_checkpoint(int argc, char **argv);
int cmd_erase(int argc, char **argv);
int cmd_device(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_assign(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cli_conflicts_resolve(int argc, char **argv);
int cmd_pull(int argc, char **argv);

#endif
