/* metrics: GET /metrics (Prometheus text format), gathered off the loop. */
#ifndef SHAHIDI_METRICS_H
#define SHAHIDI_METRICS_H

struct http_conn;
struct http_request;
struct server;

void metrics_serve(struct http_conn *c, struct server *srv, struct http_request *req);

#endif
