/* office_int.h: what office.c and office_export.c share. */
#ifndef SHAHIDI_OFFICE_INT_H
#define SHAHIDI_OFFICE_INT_H

#include <jansson.h>

struct http_conn;
struct http_request;

/* Answers status with j as one line of JSON (j stays the caller's). */
void office__respond_json(struct http_conn *c, int status, json_t *j);
/* "device:HEX" of the request's token, as the audit log names actors. */
void office__actor_of(const struct http_request *req, char buf[64]);

#endif
