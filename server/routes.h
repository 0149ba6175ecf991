/* routes: what each endpoint does. The table of routes (path, method,
 * roles, body limit, handler) is in routes.c; http.c reaches it only
 * through routes_handlers.
 *
 *   GET  /healthz        liveness, no token
 *   POST /v1/push        a PushBatch; answered once durably committed
 *   GET  /v1/pull        ?cursor=C&limit=N: the device's feed
 *   GET  /v1/forms       the FormList
 *
 * For coordinators and admins (JSON; a coordinator sees only its counties):
 *   GET  /                       the status page (it asks for a token)
 *   GET  /v1/status              sync status per device, county, store
 *                                (?silent_days=D, ?all_counties=1: empty ones too)
 *   GET  /v1/conflicts           open conflicts with every value
 *   POST /v1/conflicts/resolve   {"record_id", "field", "take"|"value"|"deleted"}
 *   POST /v1/assign              {"record_id", "device"}
 *   GET  /v1/history?record=ID   a record's custody trail
 *   GET  /v1/status/daily?days=N pushes per county and server day (N <= 366, 30)
 *   GET  /v1/export?format=csv|csvzip|ndjson|xlsx|sav|dta&form=&county=&since=&include_deleted=1
 *                                (a coordinator: its counties, no sensitive fields)
 *   GET  /v1/export?format=files&county=   the attachments as a zip (upload.h:
 *                                upload_zip), files of sensitive fields left out
 * For admins:
 *   GET  /v1/export?...&include_sensitive=1
 *   GET  /v1/devices, POST /v1/devices/enrol {"name","county","role"[,"url"]}
 *        (with url: also the enrolment's QR code, "payload" and "qr_svg"),
 *        POST /v1/devices/revoke {"id"}
 *   GET  /metrics                Prometheus text format (admins, and metrics tokens:
 *                                the only thing those may read)
 * Attachments (files.c, files.h): /v1/files/ (tus 1.0.0), GET /v1/files/ID
 */
#ifndef SHAHIDI_ROUTES_H
#define SHAHIDI_ROUTES_H

#include <stdint.h>

#include "http.h"

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
	R_DAILY,
	R__COUNT
};

/* The route's path for the log and metrics; "other" for R_NONE. */
const char *routes_name(int id);

/* The routes grouped for the latency histogram: a small fixed set, so
 * that its series stay few (route="push", ...). */
enum route_group {
	RG_PUSH,
	RG_PULL,
	RG_FILES,
	RG_OFFICE,   /* the page, status, conflicts, history, devices... */
	RG_EXPORT,
	RG_METRICS,
	RG_HEALTHZ,
	RG_OTHER,    /* /v1/forms, unknown paths */
	RG__COUNT
};
/* The group of a route_id (RG_OTHER for R_NONE), and its label. */
enum route_group routes_group(int id);
const char *routes_group_name(enum route_group g);

/* What http_start is given: routing, token checks, dispatch, and whether
 * the work in flight (struct server's busy counts, the writer's queue)
 * should keep new requests unread. */
extern const struct http_handlers routes_handlers;

#endif
