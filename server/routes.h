/* routes: what each endpoint does. Dispatched from http.c through
 * routes_on_headers() and routes_on_request() (declared in http.h).
 *
 *   GET  /healthz        liveness, no token
 *   POST /v1/push        a PushBatch; answered once durably committed
 *   GET  /v1/pull        ?cursor=C&limit=N: the device's feed
 *   GET  /v1/forms       the FormList
 *
 * For coordinators and admins (JSON; a coordinator sees only its counties):
 *   GET  /                       the status page (it asks for a token)
 *   GET  /v1/status              sync status per device, county, store
 *   GET  /v1/conflicts           open conflicts with every value
 *   POST /v1/conflicts/resolve   {"record_id", "field", "take"|"value"|"deleted"}
 *   POST /v1/assign              {"record_id", "device"}
 *   GET  /v1/history?record=ID   a record's custody trail
 * For admins:
 *   GET  /v1/export?format=csv|ndjson&form=&county=&since=&include_deleted=1&include_sensitive=1
 *   GET  /v1/devices, POST /v1/devices {"name","county","role"}, POST /v1/devices/revoke {"id"}
 *   GET  /metrics                Prometheus text format
 * Attachments (files.c, files.h): /v1/files/ (tus 1.0.0), GET /v1/files/ID
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
	R_PAGE,
	R_STATUS,
	R_CONFLICTS,
	R_RESOLVE,
	R_ASSIGN,
	R_HISTORY,
	R_EXPORT,
	R_DEVICES,
	R_ENROL,
	R_REVOKE,
	R_METRICS,
	R_FILES,
	R__COUNT
};

const char *routes_name(int id);

/* Async work (decoding, pulls, commits) not yet finished: the server waits
 * for it to reach zero before it stops. */
uint64_t routes_busy(const struct server *srv);
/* Of which requests other than pushes (pulls, office requests): they have
 * places of their own in the queue, so that pushes never hold them back. */
uint64_t routes_others_busy(const struct server *srv);

#endif
