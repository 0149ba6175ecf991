/* http_int.h: what the files of the http module (http.c: connections,
 * backpressure, timers, reading, listening; http_parse.c: the request
 * parser's callbacks; http_respond.c: responses and streams) share, and
 * nothing outside it includes. Loop thread only. */
#ifndef SHAHIDI_HTTP_INT_H
#define SHAHIDI_HTTP_INT_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "http.h"

#define READ_CHUNK (64 * 1024)
#define WRITE_QUEUE_CAP (1024 * 1024) /* stop parsing while more is unsent */
#define DRAIN_POLL_MS 250 /* how often to look whether an answer has arrived */
/* Upload body bytes the loop reads in one iteration, all uploads together
 * (http.c: on_alloc). Beyond it they wait for the next iteration, so that
 * a push, /healthz, or the completions of the pool and the writer are not
 * queued behind megabytes of bodies: libuv reads a readable stream up to
 * 32 times 64 KiB in a row, and sixteen uploads at full speed kept each
 * iteration of the loop busy for tens of milliseconds. */
#define UPLOAD_READ_BUDGET (256 * 1024)
/* While other requests are being answered (a push decoded or committed, a
 * pull, the office), uploads read one budget at most this often, and stop
 * reading in between: the bytes they would take cost CPU at both ends of
 * the socket (the phones' senders, the kernel's copies, ours), which
 * those requests are waiting for on a small machine. A floor, not a stop:
 * 256 KiB each 10 ms is 25 MB/s while requests are answered back to back
 * (a push of 20 reports every 50 ms holds them ~5% of the time; measured
 * with 4 and 20 ms, no difference in the uploads' speed beyond the
 * machine's noise). */
#define UPLOAD_HOLD_MS 10

enum conn_state {
	CS_IDLE,    /* keep-alive, waiting for a request */
	CS_HEADERS, /* reading request line and headers */
	CS_BODY,    /* reading the body */
	CS_BUSY,    /* request being handled; not reading */
};

enum hdr {
	H_OTHER,
	H_AUTHORIZATION,
	H_CONTENT_ENCODING,
	H_ACCEPT_ENCODING,
	H_EXPECT,
	H_FORWARDED_FOR,
	H_UPLOAD_LENGTH,
	H_UPLOAD_OFFSET,
	H_UPLOAD_CHECKSUM,
	H_UPLOAD_METADATA,
	H_CONTENT_TYPE,
	H_RANGE,
};

struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	struct server *srv;
	llhttp_t parser;
	enum conn_state state;
	int refs;            /* the connection itself + async work in flight */
	int open_handles;    /* tcp and timer until their close callbacks */
	bool closing;
	bool reading;
	bool in_parser;      /* inside llhttp_execute: do not re-enter it */
	bool responded;
	bool close_after;    /* close once the response is written */
	bool peer_eof;
	bool paused_by_server; /* backpressure */
	bool granted;        /* resumed: may read its next request even while
				others wait (not when overloaded) */
	bool has_data;       /* paused with a request waiting in its socket */
	bool admitted;       /* resumed with a request to read: it holds one
				of the queue's places until it has read it */
	bool expect_continue;
	bool draining;       /* idle, its answer not yet received by the client */
	bool version_seen;   /* the request line named HTTP/1.x */
	bool hval_open;      /* a header value is being parsed... */
	const char *hval_next; /* ...and its next byte would be here */
	const char *exec_end; /* the end of what the parser was last given */
	bool log_deferred;   /* answered inside the parser: logged after it */
	int log_status;
	size_t log_out;
	int error_status;    /* set by a parser callback that refused */
	struct http_request req;
	struct buf url;
	char hname[32];
	size_t hname_len;
	enum hdr hcur;
	struct buf hval;
	size_t header_bytes;
	struct buf body;
	struct buf pending;  /* bytes read and not parsed yet */
	char extra[512];     /* extra response header lines */
	size_t extra_len;
	size_t inflight;     /* body bytes arrived, charged to admit */
	uint64_t inflight_dev; /* the device they are charged to */
	uint64_t t0;         /* request start, monotonic ns */
	uint64_t body_t0, body_last; /* the body's start and last bytes, ns */
	uint64_t drain_t0;   /* when its answer was written, ns */
	size_t bytes_in;     /* the request's bytes parsed so far */
	uint8_t peer[16];    /* the socket's remote address */
	bool peer_loopback;
	bool streaming;      /* a chunked response is being written */
	bool stream_raw;     /* ...or one of a known length, not chunked */
	bool body_streamed;  /* this request's body goes to req.body_sink */
	int sink_status;     /* the sink refused (507, 500): the rest of the
				body is read and dropped, then this is answered */
	uint64_t upload_round; /* the round in which its body last read */
	uint64_t upload_iter;  /* ...and the loop iteration */
	bool upload_deferred;  /* on_alloc gave it no buffer: wait for the next
				  iteration (its socket stays readable) */
	bool upload_hold;      /* ...and stop reading until uploads_release() */
	bool upload_held;      /* not reading until then */
	size_t stream_out;   /* its bytes so far, for the log */
	struct http_conn *prev, *next;
};

struct write_req {
	uv_write_t req;
	struct http_conn *c;
	struct buf data;
	void (*drained)(void *ud); /* streams: the producer waits for this */
	void *ud;
};

struct http_server {
	uv_tcp_t listener;
	bool listening;
	struct http_conn *conns; /* every open connection */
	unsigned n_conns;
	struct http_conn *resume_from; /* where resume_paused() looks first */
	const struct http_handlers *handlers; /* the server's, not owned */
	struct admit *admit;     /* request body bytes held, per device */
	bool paused;             /* reading paused for backpressure */
	unsigned admitted;       /* connections admitted, request not read yet */
	uv_timer_t resume_timer; /* while some wait: resume_paused() again */
	bool resume_timer_open;
	llhttp_settings_t settings;
	/* Upload bodies' share of each loop iteration (UPLOAD_READ_BUDGET),
	 * taken in rounds: an upload that has read in this round waits until
	 * every other one ready to read has had its turn (epoll hands out
	 * readable sockets in the same order every time). */
	uv_prepare_t turn;       /* before each poll: a new iteration */
	struct server *turn_srv; /* the server, for on_turn */
	bool turn_open;
	uint64_t iter;           /* loop iterations */
	size_t upload_read;      /* upload body bytes read in this iteration */
	uint64_t upload_round;
	uint64_t upload_next_ms; /* while others wait, uploads read from then */
	bool uploads_stopped;    /* some have stopped reading until then */
	uv_timer_t hold_timer;   /* ...and this wakes the loop then */
	bool hold_timer_open;
	char buf[READ_CHUNK];    /* shared read buffer: parsing is synchronous */
};

/* http.c */
void http__conn_close(struct http_conn *c);
void http__release_inflight(struct http_conn *c);
/* Is the server too busy to start reading another push? Another request
 * (healthz, pulls, the office)? */
bool http__overloaded(struct server *srv);
bool http__others_overloaded(struct server *srv);
int http__next_is_push(struct http_conn *c);
void http__unadmit(struct http_conn *c);
void http__resume_paused(struct server *srv);
void http__pause_by_server(struct http_conn *c);
void http__update_reading(struct http_conn *c);
/* (Re)arms the connection's one timer. */
void http__arm(struct http_conn *c, unsigned ms);
/* Keep-alive after an answer: the idle time starts once it has arrived. */
void http__start_idle(struct http_conn *c);

/* http_parse.c */
void http__parser_settings(llhttp_settings_t *s);
/* Parses what is pending, one request at a time. */
void http__process(struct http_conn *c);
/* The same, with len bytes just read into data (the shared buffer). */
void http__process_read(struct http_conn *c, const char *data, size_t len);
/* A streamed request body ends before its request is handled: tells its
 * route once (http.h: body_abort). */
void http__body_abort(struct http_conn *c);

/* http_respond.c */
void http__log_request(struct http_conn *c, int status, size_t out);

#endif
