/* office: the coordinators' and admins' endpoints (see routes.h). */
#ifndef SHAHIDI_OFFICE_H
#define SHAHIDI_OFFICE_H

struct http_conn;
struct http_request;
struct server;

void office_page(struct http_conn *c, struct server *srv, struct http_request *req);
void office_status(struct http_conn *c, struct server *srv, struct http_request *req);
void office_conflicts(struct http_conn *c, struct server *srv, struct http_request *req);
void office_resolve(struct http_conn *c, struct server *srv, struct http_request *req);
void office_assign(struct http_conn *c, struct server *srv, struct http_request *req);
void office_daily(struct http_conn *c, struct server *srv, struct http_request *req);
void office_history(struct http_conn *c, struct server *srv, struct http_request *req);
void office_export(struct http_conn *c, struct server *srv, struct http_request *req);
void office_devices(struct http_conn *c, struct server *srv, struct http_request *req);
void office_enrol(struct http_conn *c, struct server *srv, struct http_request *req);
void office_revoke(struct http_conn *c, struct server *srv, struct http_request *req);

#endif
