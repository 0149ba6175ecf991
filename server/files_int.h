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

/* GET (and an office token's HEAD) of /v1/files/ID. */
void files__download(struct http_conn *c, struct server *srv, struct http_request *req,
		     const uint8_t id[16]);

/* GET /v1/files/status: attachments referenced and not yet complete, per
 * device and county, in the token's counties (upload_pending), as JSON. */
void files__status(struct http_conn *c, struct server *srv, struct http_request *req);

#endif
