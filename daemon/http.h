/*
 * http: the daemon's HTTP endpoints, on libmicrohttpd (confined to
 * daemon/http.c). GET and HEAD only; anything else gets 405. Requests are
 * parsed strictly: malformed header fields, a missing Host on HTTP/1.1, a
 * space in the request target, or a body on GET or HEAD get 400 before any
 * body is read.
 *
 *   GET /v1/snapshot            the file <snapshot_dir>/latest points to,
 *                               ETag "<version>", 304 on If-None-Match
 *   GET /v1/snapshot/<version>  that version while it is kept, else 404
 *   GET /metrics                the metrics callback's text (Prometheus)
 *   GET /v1/status              the status callback's text (JSON)
 *   GET /healthz                200 "ok" (never needs the token)
 *   GET /readyz                 200 "ready" or 503 "not ready: <reason>"
 *   GET /                       the status page (cfg->page, HTML), which
 *                               polls /v1/status
 *
 * With a token, every path but /healthz and / needs "Authorization: Bearer
 * <token>", else 401. The page holds no data (it asks for the token when
 * /v1/status answers 401). A snapshot is served from the file descriptor opened
 * for that request: a publish or prune that replaces or unlinks files meanwhile
 * never gives a torn or mixed body.
 *
 * Threads: libmicrohttpd runs its own threads (epoll, a small pool of
 * workers). The metrics and ready callbacks run on those threads, possibly
 * several at once: they must be thread-safe and quick (a worker serves many
 * connections). http_port() and http_stats() may be called from any thread.
 * http_start() and http_stop() belong to one thread; after http_stop()
 * returns no callback runs any more.
 */
#ifndef DERRD_HTTP_H
#define DERRD_HTTP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *bind;         /* numeric IPv4 or IPv6 address; NULL = "127.0.0.1" */
    uint16_t port;            /* 0 = an ephemeral port (tests; see http_port()) */
    const char *token;        /* bearer token; NULL or "" = no authentication */
    const char *snapshot_dir; /* NULL = /v1/snapshot is always 404 */
    unsigned max_connections; /* 0 = 64 */
    unsigned timeout_s;       /* idle seconds before a connection is closed; 0 = 30.
                               * A request's headers must also arrive within
                               * min(10, timeout_s) s of the connection (or of
                               * its last request), else it is closed: slow
                               * clients cannot hold connections */
    unsigned header_deadline_s; /* 0 = min(10, timeout_s), the "min(10, timeout_s)"
                                 * above and below; at most timeout_s */
    unsigned min_rate_kibps;  /* KiB/s; 0 = 16. A response must be sent in full
                               * within min(10, timeout_s) s plus its size at
                               * this rate, else the connection is reset: slow
                               * readers cannot hold connections either */
    size_t memory_limit;      /* per connection; request headers must fit; 0 = 32 KiB */
    unsigned per_ip_limit;    /* connections per client address; 0 = no limit */
    unsigned threads;         /* worker threads; 0 = 2 */
    /* Sets *body to a malloc'd text (taken over) and *len to its length, and
     * returns 0, or a negative errno (500). NULL: /metrics is 404. */
    int (*metrics)(void *ud, char **body, size_t *len);
    /* The same for /v1/status (JSON). NULL: /v1/status is 404. */
    int (*status)(void *ud, char **body, size_t *len);
    /* 1 when ready, 0 when not, with a reason in why. NULL: always ready. */
    int (*ready)(void *ud, char *why, size_t whylen);
    /* The page served at / (not copied: it must outlive the server). NULL:
     * "derrd". */
    const char *page;
    size_t page_len;
    void *ud;
} http_cfg_t;

typedef struct http http_t;

/* Binds and starts serving. cfg's strings are copied. Returns 0 with *out
 * set, or a negative errno (-EADDRINUSE, -EACCES, -EINVAL for a bad address,
 * ...) with the reason in err. */
int http_start(http_t **out, const http_cfg_t *cfg, char *err, size_t errlen);

/* Closes the listening socket and every connection, waits for the threads.
 * NULL is ok. */
void http_stop(http_t *h);

/* The bound port (the real one when cfg->port was 0). */
uint16_t http_port(const http_t *h);

typedef struct {
    uint64_t requests;   /* requests handled (not those libmicrohttpd refuses
                          * itself, such as headers over the memory limit) */
    uint64_t status_2xx, status_304, status_4xx, status_5xx;
    uint64_t bytes_sent; /* body bytes of responses sent in full (approximate:
                          * an aborted download counts nothing) */
    uint64_t cut_headers; /* connections closed for want of full request headers in time */
    uint64_t cut_rate;    /* connections reset for a response not taken in time */
    uint64_t cut_idle;    /* kept-alive connections closed with no next request in time */
} http_stats_t;

/* A snapshot of the counters; each is read atomically, the set is not. */
void http_stats(const http_t *h, http_stats_t *out);

#endif
