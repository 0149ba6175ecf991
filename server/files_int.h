/* files_int.h: what files.c (uploads) and files_get.c (downloads) share. */
#ifndef SHAHIDI_FILES_INT_H
#define SHAHIDI_FILES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_conn;
struct http_request;
struct server;

#define FILES_PREFIX "/v1/files/"
#define FILES_STATUS "/v1/files/status"
#define FILES_CHUNK (64 * 1024)

extern uint64_t files__busy; /* async work in flight (loop thread) */

/* DATA/files/partial/<file id hex>, DATA/files/sha256/<hash hex> */
void files__partial_path(const struct server *srv, const uint8_t id[16], char *out, size_t n);
void files__file_path(const struct server *srv, const uint8_t sha[32], char *out, size_t n);

/* Was every record that named file id erased (410 file_erased)? */
bool files__erased(struct server *srv, const uint8_t id[16]);

struct upload_ref;
struct upload_state;
struct upload_file;

/* files.c: what the tus routes share. */
int files__ensure_dirs(const struct server *srv);
int files__fsync_dir(const char *path);
void files__tus_header(struct http_conn *c);
void files__offset_headers(struct http_conn *c, uint64_t offset, uint64_t length);
/* A decimal header: 0, -ENOENT (absent), -EINVAL. */
int files__header_u64(const char *s, uint64_t *ret);
/* The reference a change of device made to file id (what it may upload).
 * 0, -ENOENT, or an error. */
int files__own_ref(struct server *srv, const uint8_t id[16], uint64_t device,
		   struct upload_ref *ret);
/* 410 file_erased. */
void files__erased_error(struct http_conn *c);
/* The upload's state, or (sha given) 1 with the complete file in *done. */
int files__read_upload(struct server *srv, const uint8_t id[16], struct upload_state *u,
		       struct upload_file *done, const uint8_t *sha);

/* files_patch.c: PATCH /v1/files/ID. At the headers: checks, and the body
 * sink set up (or the refusal answered); at the request's end: the answer,
 * once the bytes are on disk and committed. */
void files__patch_headers(struct http_conn *c, struct server *srv, struct http_request *req,
			  const uint8_t id[16]);
void files__patch_request(struct http_conn *c, struct http_request *req);
/* Whether a PATCH of upload id is in progress (one at a time). */
bool files__patch_running(const uint8_t id[16]);

/* GET (and an office token's HEAD) of /v1/files/ID. */
void files__download(struct http_conn *c, struct server *srv, struct http_request *req,
		     const uint8_t id[16]);

/* GET /v1/files/status: attachments referenced and not yet complete, per
 * device and county, in the token's counties (upload_pending), as JSON. */
void files__status(struct http_conn *c, struct server *srv, struct http_request *req);

#endif
