/* routes: what each endpoint does. Dispatched from http.c through
 * routes_on_headers() and routes_on_request() (declared in http.h).
 *
 *   GET  /healthz        liveness, no token
 *   POST /v1/push        a PushBatch; answered once durably committed
 *   GET  /v1/pull        ?cursor=C&limit=N: the device's feed
 *   GET  /v1/forms       the FormList
 */
#ifndef SHAHIDI_ROUTES_H
#define SHAHIDI_ROUTES_H

#include <stdint.h>

struct server;

enum route_id {
	R_NONE = 0,
	R_HEALTHZ,
	R_PUSH,
	R_PULL,
	R_FORMS,
	R__COUNT
};

const char *routes_name(int id);

/* Async work (decoding, pulls, commits) not yet finished: the server waits
 * for it to reach zero before it stops. */
uint64_t routes_busy(const struct server *srv);

#endif
