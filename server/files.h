/* files: attachments' bytes over HTTP, at /v1/files/.
 *
 *   OPTIONS /v1/files/          what the server supports (tus 1.0.0)
 *   POST    /v1/files/          creation: Upload-Length, Upload-Metadata
 *                               "fileid <base64 of the file id's 32 hex>"
 *                               -> 201, Location: /v1/files/<file id hex>
 *   HEAD    /v1/files/ID        Upload-Offset (bytes durably on disk), Upload-Length
 *   PATCH   /v1/files/ID        appends at Upload-Offset (application/offset+octet-stream),
 *                               Upload-Checksum "sha256 <base64>" optional
 *   DELETE  /v1/files/ID        termination
 *   GET     /v1/files/ID        the complete file (Range), for whoever may see its record
 *
 * A phone may create an upload only for a file id that a change it pushed
 * references (an Attachment value, see upload.h); the size and SHA-256 come
 * from that value. The body of a PATCH is written to the file as it
 * arrives (http.h: body_sink), never held whole in memory.
 *
 * Loop thread only; one server per process.
 */
#ifndef SHAHIDI_FILES_H
#define SHAHIDI_FILES_H

#include <stdint.h>

struct http_conn;
struct http_request;
struct server;

/* After the token was checked (routes.c): refuses at once, or prepares
 * the request (a PATCH's body sink). */
void files_on_headers(struct http_conn *c, struct server *srv, struct http_request *req);
/* Once the request (and a PATCH's body) has arrived. */
void files_on_request(struct http_conn *c, struct server *srv, struct http_request *req);
/* Starts dropping expired uploads (their state and bytes), every
 * --upload-expiry or hour, whichever is shorter. Its timer is closed with
 * the loop's other handles. 0 or a libuv error. */
int files_start(struct server *srv);
/* Work in flight (syncing, commits, downloads): the server waits for it. */
uint64_t files_busy(void);

#endif
