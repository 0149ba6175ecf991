/* office_int.h: what the office's routes (office.c, office_export.c)
 * share. Private to the server. */
#ifndef SHAHIDI_OFFICE_INT_H
#define SHAHIDI_OFFICE_INT_H

#include <jansson.h>
#include <stdbool.h>

struct http_conn;
struct http_request;

/* Responds with j as one line of JSON (j stays the caller's). */
void office__respond_json(struct http_conn *c, int status, json_t *j);
/* Whether a county is in the requester's scope (no scope: every county). */
bool office__in_scope(const struct http_request *req, const char *county);
/* "device:HEX" of the requester, for the audit log. */
void office__actor_of(const struct http_request *req, char buf[64]);

#endif
