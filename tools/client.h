/* client: a small blocking HTTP/1.1 client for the CLI (push, pull, and the
 * admin commands that talk to a running server). Plain HTTP: production
 * puts TLS in front of the server, and the CLI runs beside it. */
#ifndef SHAHIDI_CLIENT_H
#define SHAHIDI_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct client_response {
	int status;
	struct buf body;        /* decoded (inflated) body */
	char content_type[64];
	char retry_after[64];
};

/* Sends one request to url (http://HOST:PORT) + path and reads the
 * response. headers: extra header lines, each ending in "\r\n" (may be
 * NULL). The body is sent as is. Returns 0 with *ret filled (free its
 * body), or a negative errno (connection refused, timeout, bad response).
 * timeout_ms bounds the whole exchange. */
int client_request(const char *url, const char *method, const char *path, const char *headers,
		   const uint8_t *body, size_t len, unsigned timeout_ms,
		   struct client_response *ret);
void client_response_free(struct client_response *r);

#endif
