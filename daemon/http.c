/* The daemon's HTTP endpoints on libmicrohttpd; see http.h. */
#include "daemon/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
/* microhttpd.h wants the socket types above first. */
#include <microhttpd.h>

#include "io/buf.h"
#include "io/log.h"

#define HTTP_DEFAULT_BIND "127.0.0.1"
#define HTTP_DEFAULT_CONNECTIONS 64
#define HTTP_DEFAULT_TIMEOUT_S 30
#define HTTP_DEFAULT_MEMORY (32 * 1024)
#define HTTP_DEFAULT_THREADS 2
#define HTTP_DEFAULT_MIN_RATE_KIBPS 16
#define HTTP_LOG_INTERVAL_MS 1000
#define HTTP_HEADER_DEADLINE_S 10 /* request headers in full within this, or timeout_s if less */
#define HTTP_REAP_TICK_MS 250 /* how often the reaper looks; a deadline is kept this closely */

/* student-<20 digits>.dsnap, the only names ever opened */
#define HTTP_SNAP_PREFIX "student-"
#define HTTP_SNAP_SUFFIX ".dsnap"
#define HTTP_SNAP_DIGITS 20
#define HTTP_SNAP_NAME_LEN (sizeof(HTTP_SNAP_PREFIX) - 1 + HTTP_SNAP_DIGITS + sizeof(HTTP_SNAP_SUFFIX) - 1)

#define HTTP_TEXT "text/plain; charset=utf-8"
#define HTTP_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"
#define HTTP_JSON "application/json"
#define HTTP_HTML "text/html; charset=utf-8"

/* One per open connection (libmicrohttpd's socket context), on the list in
 * struct http while the socket is open: the reaper's view of it. */
typedef struct http_conn {
    struct http_conn *prev, *next;
    int fd;
    uint64_t since_ms; /* monotonic: accepted, or the last request done */
    uint64_t send_by_ms; /* monotonic: the queued response's deadline; 0 = none queued */
    int in_request;    /* 1 from a request's full headers to its end */
    int served;        /* a request on it has ended: it is kept alive */
    int line;          /* the next request's line has arrived (since the last end) */
    int reaped;        /* shut down by the reaper; libmicrohttpd closes it */
} http_conn_t;

struct http {
    struct MHD_Daemon *mhd;
    char *dir;   /* NULL: no snapshots */
    char *token; /* NULL: no authentication */
    size_t token_len;
    int (*metrics)(void *ud, char **body, size_t *len);
    int (*status)(void *ud, char **body, size_t *len);
    int (*ready)(void *ud, char *why, size_t whylen);
    const char *page;
    size_t page_len;
    void *ud;
    uint16_t port;
    pthread_mutex_t log_mu; /* guards the three below */
    int started;            /* 0: libmicrohttpd's messages go to start_err */
    char start_err[512];
    log_ratelimit_t log_rl;
    _Atomic uint64_t requests, status_2xx, status_304, status_4xx, status_5xx, bytes_sent;
    _Atomic uint64_t cut_headers, cut_rate, cut_idle; /* the reaper's, by reason */
    /* The reaper: libmicrohttpd's timeout is an idle timeout, so a client
     * that sends a header byte every few seconds would hold a connection
     * (and, with enough of them, every connection) forever. The reaper
     * shuts down a connection whose request headers have not arrived in
     * full deadline_ms after it was accepted or its last request ended:
     * HTTP_HEADER_DEADLINE_S, or timeout_s when that is shorter. A client
     * sends its headers in one go; an idle kept-alive connection (no next
     * request line) is closed as soon, which frees the slot for another
     * client, and counted apart: that close is routine (a scraper that
     * keeps its connection between scrapes), not a slow client.
     * The same holds for a response read a few bytes before each idle
     * timeout: a snapshot of megabytes would hold its connection for
     * hours. A response must be sent in full within deadline_ms plus its
     * size at min_rate from when it is queued, else the reaper resets the
     * connection. */
    pthread_mutex_t conn_mu; /* guards the list, the fields of its entries, stop */
    pthread_cond_t conn_cv;
    http_conn_t *conns;
    uint64_t deadline_ms;
    uint64_t min_rate; /* bytes a second */
    int reaper_started, stop;
    pthread_t reaper;
};

/* Per request, in libmicrohttpd's request context: made when the request
 * line has been read (http__uri; by http__handle if that failed), freed in
 * http__completed. */
typedef struct {
    uint64_t body; /* bytes of the queued body (0 for HEAD) */
    int started;   /* http__handle has had the headers */
    int answered;
    int bad_target; /* the request target as sent holds a space */
} http_req_t;

static void http__warn(http_t *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One warning a second at most: a client can make these as often as it likes. */
static void http__warn(http_t *h, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    uint64_t dropped = 0;
    pthread_mutex_lock(&h->log_mu);
    int ok = log_ratelimit_ok(&h->log_rl, HTTP_LOG_INTERVAL_MS, &dropped);
    pthread_mutex_unlock(&h->log_mu);
    if (!ok)
        return;
    if (dropped)
        log_warn("http: %s (%" PRIu64 " more suppressed)", line, dropped);
    else
        log_warn("http: %s", line);
}

static void http__mhd_log(void *cls, const char *fmt, va_list ap)
{
    http_t *h = cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    pthread_mutex_lock(&h->log_mu);
    int started = h->started;
    if (!started) /* the last line is usually the one that says why */
        snprintf(h->start_err, sizeof(h->start_err), "%s", line);
    pthread_mutex_unlock(&h->log_mu);
    if (started)
        http__warn(h, "%s", line);
}

static uint64_t http__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Connection opened and closed: keeps the reaper's list. libmicrohttpd
 * calls CLOSED before it closes the socket, so a descriptor on the list is
 * always this connection's, never a reused one. */
static void http__notify_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    http_t *h = cls;
    http_conn_t *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci || !(c = calloc(1, sizeof(*c))))
            return; /* not watched: libmicrohttpd's idle timeout still applies */
        c->fd = ci->connect_fd;
        c->since_ms = http__now_ms();
        pthread_mutex_lock(&h->conn_mu);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->conn_mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && c) {
        pthread_mutex_lock(&h->conn_mu);
        if (c->prev)
            c->prev->next = c->next;
        else
            h->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&h->conn_mu);
        free(c);
        *socket_context = NULL;
    }
}

/* Marks conn's request as started (headers in full) or ended. */
static void http__conn_request(http_t *h, struct MHD_Connection *conn, int in_request)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    http_conn_t *c = ci ? ci->socket_context : NULL;
    if (!c)
        return;
    pthread_mutex_lock(&h->conn_mu);
    c->in_request = in_request;
    if (!in_request) {
        c->since_ms = http__now_ms();
        c->send_by_ms = 0;
        c->served = 1;
        c->line = 0;
    }
    pthread_mutex_unlock(&h->conn_mu);
}

/* Makes the close of fd a reset: the kernel drops what it still holds of a
 * response (up to megabytes) instead of going on sending it, at the slow
 * reader's pace, after libmicrohttpd has let go of the connection. */
static void http__reset_on_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* Sets the deadline of the response just queued on conn, of body bytes. */
static void http__conn_response(http_t *h, struct MHD_Connection *conn, uint64_t body)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    http_conn_t *c = ci ? ci->socket_context : NULL;
    if (!c)
        return;
    /* body * 1000 / min_rate without overflow */
    uint64_t ms = body / h->min_rate * 1000u + body % h->min_rate * 1000u / h->min_rate;
    pthread_mutex_lock(&h->conn_mu);
    c->send_by_ms = http__now_ms() + h->deadline_ms + ms;
    pthread_mutex_unlock(&h->conn_mu);
}

/* Shuts down (not closes: the descriptor stays libmicrohttpd's) every
 * connection past its deadline for request headers or for its response;
 * libmicrohttpd then reads the end of the stream, or fails to send, and
 * closes it as a client abort. */
static void *http__reaper(void *arg)
{
    http_t *h = arg;
    pthread_mutex_lock(&h->conn_mu);
    while (!h->stop) {
        uint64_t now = http__now_ms();
        unsigned n_headers = 0, n_rate = 0; /* for the warnings (idle closes are routine) */
        for (http_conn_t *c = h->conns; c; c = c->next) {
            if (c->reaped)
                continue;
            _Atomic uint64_t *counter;
            if (!c->in_request) {
                if (now - c->since_ms < h->deadline_ms)
                    continue;
                if (c->served && !c->line) {
                    counter = &h->cut_idle;
                } else {
                    n_headers++;
                    counter = &h->cut_headers;
                }
            } else {
                if (!c->send_by_ms || now < c->send_by_ms)
                    continue;
                http__reset_on_close(c->fd);
                n_rate++;
                counter = &h->cut_rate;
            }
            /* counted first: a client that sees the close sees it counted */
            atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
            shutdown(c->fd, SHUT_RDWR);
            c->reaped = 1;
        }
        if (n_headers || n_rate) {
            pthread_mutex_unlock(&h->conn_mu);
            if (n_headers)
                http__warn(h, "closed %u connection(s) that sent no full request headers "
                           "within %" PRIu64 " s", n_headers, h->deadline_ms / 1000);
            if (n_rate)
                http__warn(h, "reset %u connection(s) whose response was not taken in full "
                           "within %" PRIu64 " s plus its size at %" PRIu64 " KiB/s",
                           n_rate, h->deadline_ms / 1000, h->min_rate / 1024);
            pthread_mutex_lock(&h->conn_mu);
        }
        struct timespec ts = log_deadline(HTTP_REAP_TICK_MS);
        if (!h->stop)
            pthread_cond_timedwait(&h->conn_cv, &h->conn_mu, &ts);
    }
    pthread_mutex_unlock(&h->conn_mu);
    return NULL;
}

/* Digits only, 1 or more, with or without leading zeros, no overflow. */
static int http__parse_u64(const char *s, size_t n, uint64_t *out)
{
    while (n > 1 && s[0] == '0') {
        s++;
        n--;
    }
    return buf_parse_dec(s, n, UINT64_MAX, out);
}

/* Exactly student-<20 digits>.dsnap: no slash, no dot-dot, nothing else. */
static int http__parse_name(const char *name, size_t n, uint64_t *version)
{
    const size_t pre = sizeof(HTTP_SNAP_PREFIX) - 1;
    if (n != HTTP_SNAP_NAME_LEN || memcmp(name, HTTP_SNAP_PREFIX, pre) ||
        memcmp(name + pre + HTTP_SNAP_DIGITS, HTTP_SNAP_SUFFIX, sizeof(HTTP_SNAP_SUFFIX) - 1))
        return -EINVAL;
    return http__parse_u64(name + pre, HTTP_SNAP_DIGITS, version);
}

/* Opens a regular file in dfd without following a symlink, in blocking mode.
 * O_NONBLOCK only keeps a FIFO planted under a snapshot name from blocking
 * the open. */
static int http__openat(int dfd, const char *name, int *fd_out, off_t *size)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode))
        rc = -ENOENT;
    else {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
            rc = -errno;
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *size = st.st_size;
    return 0;
}

/* Opens the snapshot that dir/latest names, reading the link once; the
 * version comes from the same name as the file, so ETag and body agree.
 * -ENOENT: no latest (or no dir); -EBADMSG: latest names something else. */
static int http__open_latest(http_t *h, uint64_t *version, int *fd_out, off_t *size)
{
    if (!h->dir)
        return -ENOENT;
    int dfd = open(h->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno == ENOTDIR ? -ENOENT : -errno;
    int rc = -ENOENT;
    char name[64] = "";
    /* A prune between readlink and open removes the file latest named a
     * moment ago: a newer latest is in place by then, so look again. */
    for (int attempt = 0; attempt < 3; attempt++) {
        ssize_t n = readlinkat(dfd, "latest", name, sizeof(name) - 1);
        if (n < 0) {
            name[0] = 0;
            rc = errno == EINVAL ? -EBADMSG : -errno; /* EINVAL: not a symlink */
            if (rc == -EBADMSG)
                http__warn(h, "%s/latest is not a symlink", h->dir);
            break;
        }
        name[n] = 0;
        if (http__parse_name(name, (size_t)n, version) < 0) {
            http__warn(h, "%s/latest points to \"%s\", not a snapshot name", h->dir, name);
            rc = -EBADMSG;
            break;
        }
        rc = http__openat(dfd, name, fd_out, size);
        if (rc != -ENOENT)
            break;
    }
    if (rc == -ENOENT && name[0]) /* deleted by hand: served as none, said why */
        http__warn(h, "%s/latest names %s, which does not exist", h->dir, name);
    close(dfd);
    return rc;
}

/* Opens version's file; ver is the URL's last segment, decimal digits only. */
static int http__open_version(http_t *h, const char *ver, uint64_t *version, int *fd_out,
                              off_t *size)
{
    if (!h->dir)
        return -ENOENT;
    if (http__parse_u64(ver, strlen(ver), version) < 0)
        return -ENOENT;
    char name[HTTP_SNAP_NAME_LEN + 1];
    snprintf(name, sizeof(name), HTTP_SNAP_PREFIX "%020" PRIu64 HTTP_SNAP_SUFFIX, *version);
    int dfd = open(h->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno == ENOTDIR ? -ENOENT : -errno;
    int rc = http__openat(dfd, name, fd_out, size);
    close(dfd);
    return rc;
}

/* Whether an If-None-Match list ("*", or entity tags, weak or strong, comma
 * separated) names the tag whose opaque part is tag[0..n). Weak comparison,
 * as RFC 9110 asks for If-None-Match; a malformed rest is ignored. */
static int http__etag_listed(const char *list, const char *tag, size_t n)
{
    const char *p = list;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            return 0;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return 0;
        const char *q = strchr(++p, '"');
        if (!q)
            return 0;
        if ((size_t)(q - p) == n && memcmp(p, tag, n) == 0)
            return 1;
        p = q + 1;
    }
}

typedef struct {
    const char *tag;
    size_t n;
    int match;
} http_inm_t;

/* Every If-None-Match header counts, not only the first. */
static enum MHD_Result http__inm_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    http_inm_t *m = cls;
    (void)kind;
    if (value && strcasecmp(key, MHD_HTTP_HEADER_IF_NONE_MATCH) == 0 &&
        http__etag_listed(value, m->tag, m->n)) {
        m->match = 1;
        return MHD_NO;
    }
    return MHD_YES;
}

/* Constant time in the bytes compared: the time depends on the configured
 * token's length only, never on where a guess goes wrong. */
static int http__token_eq(const char *want, size_t wlen, const char *got, size_t glen)
{
    volatile unsigned char diff = (unsigned char)(wlen != glen);
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned char)((unsigned char)want[i] ^ (unsigned char)(i < glen ? got[i] : 0));
    return diff == 0;
}

static int http__authorized(const http_t *h, struct MHD_Connection *conn)
{
    const char *v =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!v)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return 0;
    v += 6;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return http__token_eq(h->token, h->token_len, v, n);
}

static void http__count(http_t *h, unsigned status)
{
    _Atomic uint64_t *c = NULL;
    if (status >= 200 && status < 300)
        c = &h->status_2xx;
    else if (status == 304)
        c = &h->status_304;
    else if (status >= 400 && status < 500)
        c = &h->status_4xx;
    else if (status >= 500)
        c = &h->status_5xx;
    if (c)
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* Queues resp (consumed, may be NULL after a failed create) and counts it. */
static enum MHD_Result http__queue(http_t *h, struct MHD_Connection *conn, http_req_t *req,
                                   unsigned status, struct MHD_Response *resp, uint64_t body)
{
    if (!resp)
        return MHD_NO; /* out of memory: drop the connection */
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    if (r == MHD_YES) {
        http__count(h, status);
        http__conn_response(h, conn, body);
        req->body = body;
        req->answered = 1;
    }
    return r;
}

/* A short text response; extra header k: v when k is not NULL. */
static enum MHD_Result http__text(http_t *h, struct MHD_Connection *conn, http_req_t *req,
                                  int head, unsigned status, const char *text, const char *k,
                                  const char *v)
{
    size_t n = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, (void *)text, MHD_RESPMEM_PERSISTENT);
    if (resp && (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, HTTP_TEXT) != MHD_YES ||
                 (k && MHD_add_response_header(resp, k, v) != MHD_YES))) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    return http__queue(h, conn, req, status, resp, head ? 0 : n);
}

static int http__snapshot_headers(struct MHD_Response *resp, const char *etag, const char *ver)
{
    return MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag) == MHD_YES &&
           MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") == MHD_YES &&
           MHD_add_response_header(resp, "X-Derrd-Snapshot-Version", ver) == MHD_YES;
}

/* GET /v1/snapshot (ver NULL) and /v1/snapshot/<ver>. */
static enum MHD_Result http__snapshot(http_t *h, struct MHD_Connection *conn, http_req_t *req,
                                      int head, const char *ver)
{
    uint64_t version = 0;
    int fd = -1;
    off_t size = 0;
    int rc = ver ? http__open_version(h, ver, &version, &fd, &size)
                 : http__open_latest(h, &version, &fd, &size);
    if (rc == -ENOENT || rc == -ELOOP || rc == -EBADMSG || rc == -ENOTDIR)
        return http__text(h, conn, req, head, MHD_HTTP_NOT_FOUND,
                          ver ? "no such snapshot\n" : "no snapshot yet\n", NULL, NULL);
    if (rc < 0) {
        http__warn(h, "cannot open a snapshot in %s: %s", h->dir, strerror(-rc));
        return http__text(h, conn, req, head, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "cannot open the snapshot\n", NULL, NULL);
    }
    char digits[24], etag[32];
    snprintf(digits, sizeof(digits), "%" PRIu64, version);
    snprintf(etag, sizeof(etag), "\"%s\"", digits);

    http_inm_t m = { digits, strlen(digits), 0 };
    MHD_get_connection_values(conn, MHD_HEADER_KIND, http__inm_iter, &m);
    /* The response owns fd from here (closed when libmicrohttpd is done):
     * the body is this file whatever happens to its name meanwhile. A 304
     * is built on the file too: libmicrohttpd sends no body with a 304 but
     * does send Content-Length, which must then be the 200's (RFC 9110
     * 8.6), not 0. */
    struct MHD_Response *resp = MHD_create_response_from_fd((size_t)size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    if (!http__snapshot_headers(resp, etag, digits) ||
        (!m.match && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                             "application/octet-stream") != MHD_YES)) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    if (m.match)
        return http__queue(h, conn, req, MHD_HTTP_NOT_MODIFIED, resp, 0);
    return http__queue(h, conn, req, MHD_HTTP_OK, resp, head ? 0 : (uint64_t)size);
}

/* A body made for this request by fn (/metrics, /v1/status). */
static enum MHD_Result http__made(http_t *h, struct MHD_Connection *conn, http_req_t *req,
                                  int head, int (*fn)(void *, char **, size_t *),
                                  const char *type)
{
    if (!fn)
        return http__text(h, conn, req, head, MHD_HTTP_NOT_FOUND, "not found\n", NULL, NULL);
    char *body = NULL;
    size_t len = 0;
    int rc = fn(h->ud, &body, &len);
    if (rc < 0 || (!body && len)) {
        free(body);
        return http__text(h, conn, req, head, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "unavailable\n", NULL, NULL);
    }
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    return http__queue(h, conn, req, MHD_HTTP_OK, resp, head ? 0 : len);
}

static enum MHD_Result http__ready(http_t *h, struct MHD_Connection *conn, http_req_t *req,
                                   int head)
{
    char why[256] = "";
    int ok = !h->ready || h->ready(h->ud, why, sizeof(why)) > 0;
    char text[300];
    int n = snprintf(text, sizeof(text), ok ? "ready" : why[0] ? "not ready: %s\n" : "not ready",
                     why);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
    if (resp && (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, HTTP_TEXT) != MHD_YES ||
                 MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES)) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    return http__queue(h, conn, req, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, resp,
                       head ? 0 : len);
}

/* The status page: static HTML that holds no data. */
static enum MHD_Result http__page(http_t *h, struct MHD_Connection *conn, http_req_t *req,
                                  int head)
{
    if (!h->page)
        return http__text(h, conn, req, head, MHD_HTTP_OK, "derrd", NULL, NULL);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(h->page_len, (void *)h->page, MHD_RESPMEM_PERSISTENT);
    if (resp && (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, HTTP_HTML) != MHD_YES ||
                 MHD_add_response_header(resp, "Content-Security-Policy",
                                         "default-src 'none'; script-src 'unsafe-inline'; "
                                         "style-src 'unsafe-inline'; connect-src 'self'; "
                                         "img-src 'self' data:") != MHD_YES ||
                 MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") != MHD_YES)) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    return http__queue(h, conn, req, MHD_HTTP_OK, resp, head ? 0 : h->page_len);
}

/* RFC 9110 5.1: a field name is a token, one or more of these. */
static int http__tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

typedef struct {
    int bad;
    unsigned hosts;
} http_fields_t;

static enum MHD_Result http__field_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                        size_t key_size, const char *value, size_t value_size)
{
    http_fields_t *f = cls;
    (void)kind;
    int bad = !key || key_size == 0;
    for (size_t i = 0; !bad && i < key_size; i++)
        bad = !http__tchar((unsigned char)key[i]);
    for (size_t i = 0; !bad && value && i < value_size; i++) {
        unsigned char c = (unsigned char)value[i];
        bad = (c < 0x20 && c != '\t') || c == 0x7f;
    }
    if (bad) {
        f->bad = 1;
        return MHD_NO;
    }
    if (key_size == 4 && strncasecmp(key, MHD_HTTP_HEADER_HOST, 4) == 0)
        f->hosts++;
    return MHD_YES;
}

/* Whether the header fields are well formed, which libmicrohttpd does not
 * check in full: a name of token characters (no space before the colon, no
 * byte above 0x7f), a value without control characters but tab, at most one
 * Host, and one on anything but HTTP/1.0 (RFC 9112 3.2, 5.1; libmicrohttpd
 * takes HTTP/1.2 and later 1.x for 1.1). libmicrohttpd 0.9.75 ends a value
 * at a NUL before this sees it: what precedes the NUL is checked (and a
 * token must still match in full). */
static int http__fields_ok(struct MHD_Connection *conn, const char *version)
{
    http_fields_t f = { 0, 0 };
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, http__field_iter, &f);
    int v10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    return !f.bad && (f.hosts == 1 || (v10 && f.hosts == 0));
}

/* Whether the request announces a body: any Transfer-Encoding, or a
 * Content-Length other than 0. */
static int http__has_body(struct MHD_Connection *conn)
{
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return 1;
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    while (*cl == ' ' || *cl == '\t')
        cl++;
    while (*cl == '0')
        cl++;
    while (*cl == ' ' || *cl == '\t')
        cl++;
    return *cl != 0;
}

/* Called with the headers read, then for each piece of a request body, then
 * once more at the end of the request. GET and HEAD are answered at the end:
 * an answer queued with the headers counts as "early" in libmicrohttpd,
 * which then stops reading and closes the connection (no keep-alive). Other
 * methods get their 405 early on purpose, and a GET or HEAD with a body its
 * 400: that body is never read. */
static enum MHD_Result http__handle(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **req_cls)
{
    http_t *h = cls;
    http_req_t *req = *req_cls;
    (void)upload_data;
    int head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!req || !req->started) {
        if (!req && !(req = calloc(1, sizeof(*req))))
            return MHD_NO;
        *req_cls = req; /* freed in http__completed */
        req->started = 1;
        http__conn_request(h, conn, 1);
        atomic_fetch_add_explicit(&h->requests, 1, memory_order_relaxed);
        if (req->bad_target)
            return http__text(h, conn, req, head, MHD_HTTP_BAD_REQUEST,
                              "malformed request line\n", NULL, NULL);
        if (!http__fields_ok(conn, version))
            return http__text(h, conn, req, head, MHD_HTTP_BAD_REQUEST,
                              "malformed header field\n", NULL, NULL);
        if (!head && strcmp(method, MHD_HTTP_METHOD_GET) != 0)
            return http__text(h, conn, req, 0, MHD_HTTP_METHOD_NOT_ALLOWED,
                              "method not allowed\n", MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        /* A GET or HEAD with a body: refused before the body is read (and
         * the connection closed), as servers and proxies disagree on where
         * such a request ends (request smuggling), and a slow body would
         * hold the connection past the reaper's deadline. */
        if (http__has_body(conn))
            return http__text(h, conn, req, head, MHD_HTTP_BAD_REQUEST,
                              "a GET or HEAD request has no body\n", NULL, NULL);
        return MHD_YES;
    }
    if (req->answered || *upload_data_size) { /* the rest of a refused request */
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (strcmp(url, "/healthz") == 0)
        return http__text(h, conn, req, head, MHD_HTTP_OK, "ok", NULL, NULL);
    if (strcmp(url, "/") == 0)
        return http__page(h, conn, req, head);
    if (h->token && !http__authorized(h, conn))
        return http__text(h, conn, req, head, MHD_HTTP_UNAUTHORIZED, "unauthorized\n",
                          MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");

    static const char snap[] = "/v1/snapshot";
    const size_t snap_len = sizeof(snap) - 1;
    if (strcmp(url, snap) == 0)
        return http__snapshot(h, conn, req, head, NULL);
    if (strncmp(url, snap, snap_len) == 0 && url[snap_len] == '/')
        return http__snapshot(h, conn, req, head, url + snap_len + 1);
    if (strcmp(url, "/metrics") == 0)
        return http__made(h, conn, req, head, h->metrics, HTTP_PROMETHEUS);
    if (strcmp(url, "/v1/status") == 0)
        return http__made(h, conn, req, head, h->status, HTTP_JSON);
    if (strcmp(url, "/readyz") == 0)
        return http__ready(h, conn, req, head);
    return http__text(h, conn, req, head, MHD_HTTP_NOT_FOUND, "not found\n", NULL, NULL);
}

/* The request target as sent, before libmicrohttpd splits off the query
 * and unescapes it. Not strict (see http_start), libmicrohttpd passes on
 * what stands between the first and the last space of the request line:
 * a space in it is refused in http__handle. Returns the request's context. */
static void *http__uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    http_t *h = cls;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    http_conn_t *c = ci ? ci->socket_context : NULL;
    if (c) { /* no longer idle: the reaper's deadline now counts a slow request */
        pthread_mutex_lock(&h->conn_mu);
        c->line = 1;
        pthread_mutex_unlock(&h->conn_mu);
    }
    http_req_t *req = calloc(1, sizeof(*req));
    if (req)
        req->bad_target = strchr(uri, ' ') != NULL;
    return req;
}

static void http__completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                            enum MHD_RequestTerminationCode toe)
{
    http_t *h = cls;
    http_req_t *req = *req_cls;
    http__conn_request(h, conn, 0); /* the next request's deadline starts now */
    if (!req)
        return;
    /* A response cut by the idle timeout: libmicrohttpd closes the socket
     * after this, and a reset ends the response for the kernel too. */
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && req->answered) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            http__reset_on_close(ci->connect_fd);
    }
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        atomic_fetch_add_explicit(&h->bytes_sent, req->body, memory_order_relaxed);
    free(req);
    *req_cls = NULL;
}

static int http__hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decoding like libmicrohttpd's own, except that %00 stays as it
 * is: a decoded NUL would end the path early, and "/v1/snapshot/7%00x"
 * would then read as "/v1/snapshot/7". */
static size_t http__unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    const char *r = s;
    while (*r) {
        int hi, lo;
        if (r[0] == '%' && (hi = http__hex(r[1])) >= 0 && (lo = http__hex(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

/* Why binding failed, when libmicrohttpd does not say in errno: try the same
 * bind (with SO_REUSEADDR, as libmicrohttpd does). 0 when it would work. */
static int http__bind_errno(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    int rc = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, sa, len) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int http_start(http_t **out, const http_cfg_t *cfg, char *err, size_t errlen)
{
    *out = NULL;
    const char *bind_addr = cfg->bind && *cfg->bind ? cfg->bind : HTTP_DEFAULT_BIND;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    memset(&sin, 0, sizeof(sin));
    memset(&sin6, 0, sizeof(sin6));
    const struct sockaddr *sa;
    socklen_t salen;
    int v6 = 0;
    if (inet_pton(AF_INET, bind_addr, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons(cfg->port);
        sa = (const struct sockaddr *)&sin;
        salen = sizeof(sin);
    } else if (inet_pton(AF_INET6, bind_addr, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(cfg->port);
        sa = (const struct sockaddr *)&sin6;
        salen = sizeof(sin6);
        v6 = 1;
    } else {
        snprintf(err, errlen, "http: bind address \"%s\" is not a numeric IPv4 or IPv6 address",
                 bind_addr);
        return -EINVAL;
    }
    unsigned conns = cfg->max_connections ? cfg->max_connections : HTTP_DEFAULT_CONNECTIONS;
    unsigned timeout = cfg->timeout_s ? cfg->timeout_s : HTTP_DEFAULT_TIMEOUT_S;
    size_t memory = cfg->memory_limit ? cfg->memory_limit : HTTP_DEFAULT_MEMORY;
    unsigned threads = cfg->threads ? cfg->threads : HTTP_DEFAULT_THREADS;
    if (memory < 4096) {
        snprintf(err, errlen, "http: memory limit %zu is below 4096 bytes", memory);
        return -EINVAL;
    }

    http_t *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "http: out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&h->log_mu, NULL);
    pthread_mutex_init(&h->conn_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->conn_cv, &ca);
    pthread_condattr_destroy(&ca);
    unsigned deadline = cfg->header_deadline_s ? cfg->header_deadline_s : HTTP_HEADER_DEADLINE_S;
    if (deadline > timeout)
        deadline = timeout;
    h->deadline_ms = (uint64_t)deadline * 1000u;
    h->min_rate = (uint64_t)(cfg->min_rate_kibps ? cfg->min_rate_kibps
                                                 : HTTP_DEFAULT_MIN_RATE_KIBPS) * 1024u;
    h->metrics = cfg->metrics;
    h->status = cfg->status;
    h->ready = cfg->ready;
    h->page = cfg->page;
    h->page_len = cfg->page_len;
    h->ud = cfg->ud;
    int rc = -ENOMEM;
    if (cfg->snapshot_dir && *cfg->snapshot_dir && !(h->dir = strdup(cfg->snapshot_dir)))
        goto fail_oom;
    if (cfg->token && *cfg->token) {
        if (!(h->token = strdup(cfg->token)))
            goto fail_oom;
        h->token_len = strlen(h->token);
    }

    /* epoll with a small pool of workers: a slow client costs a socket, not
     * a thread, and libmicrohttpd blocks SIGPIPE in its own threads, so it
     * may use sendfile() for the snapshot files. */
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    struct MHD_OptionItem opts[] = {
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)http__mhd_log, h },
        { MHD_OPTION_SOCK_ADDR, 0, (void *)sa },
        { MHD_OPTION_CONNECTION_LIMIT, (intptr_t)conns, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)timeout, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)memory, NULL },
        { MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)cfg->per_ip_limit, NULL },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)http__completed, h },
        { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)http__notify_conn, h },
        /* Not strict: libmicrohttpd 0.9.75's own 400 for a missing Host
         * sends its header block twice (the first block's Content-Length
         * then frames the second). http__handle refuses a missing Host and
         * a space in the request target itself (400); a space in a header
         * name is still libmicrohttpd's to refuse (it would take -1). */
        { MHD_OPTION_STRICT_FOR_CLIENT, 0, NULL },
        { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)http__uri, h },
        { MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)http__unescape, NULL },
        { threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    h->mhd = MHD_start_daemon(flags, cfg->port, NULL, NULL, http__handle, h, MHD_OPTION_ARRAY,
                              opts, MHD_OPTION_END);
    if (!h->mhd) {
        rc = http__bind_errno(sa, salen);
        if (rc == 0)
            rc = -EIO;
        snprintf(err, errlen, "http: cannot serve on %s%s%s:%u: %s", v6 ? "[" : "", bind_addr,
                 v6 ? "]" : "", (unsigned)cfg->port,
                 h->start_err[0] ? h->start_err : strerror(-rc));
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    if ((rc = -pthread_create(&h->reaper, NULL, http__reaper, h)) < 0) {
        snprintf(err, errlen, "http: cannot start the connection reaper: %s", strerror(-rc));
        goto fail;
    }
    h->reaper_started = 1;
    pthread_mutex_lock(&h->log_mu);
    h->started = 1;
    pthread_mutex_unlock(&h->log_mu);
    *out = h;
    return 0;

fail_oom:
    snprintf(err, errlen, "http: out of memory");
fail:
    http_stop(h);
    return rc;
}

void http_stop(http_t *h)
{
    if (!h)
        return;
    if (h->reaper_started) {
        pthread_mutex_lock(&h->conn_mu);
        h->stop = 1;
        pthread_cond_signal(&h->conn_cv);
        pthread_mutex_unlock(&h->conn_mu);
        pthread_join(h->reaper, NULL);
    }
    if (h->mhd)
        MHD_stop_daemon(h->mhd); /* closes every connection: empties the list */
    if (h->token) {
        explicit_bzero(h->token, h->token_len);
        free(h->token);
    }
    free(h->dir);
    pthread_mutex_destroy(&h->log_mu);
    pthread_cond_destroy(&h->conn_cv);
    pthread_mutex_destroy(&h->conn_mu);
    free(h);
}

uint16_t http_port(const http_t *h) { return h->port; }

void http_stats(const http_t *h, http_stats_t *out)
{
    /* atomic_load wants a non-const pointer before C17's fix (DR 459). */
    http_t *m = (http_t *)h;
    out->requests = atomic_load_explicit(&m->requests, memory_order_relaxed);
    out->status_2xx = atomic_load_explicit(&m->status_2xx, memory_order_relaxed);
    out->status_304 = atomic_load_explicit(&m->status_304, memory_order_relaxed);
    out->status_4xx = atomic_load_explicit(&m->status_4xx, memory_order_relaxed);
    out->status_5xx = atomic_load_explicit(&m->status_5xx, memory_order_relaxed);
    out->bytes_sent = atomic_load_explicit(&m->bytes_sent, memory_order_relaxed);
    out->cut_headers = atomic_load_explicit(&m->cut_headers, memory_order_relaxed);
    out->cut_rate = atomic_load_explicit(&m->cut_rate, memory_order_relaxed);
    out->cut_idle = atomic_load_explicit(&m->cut_idle, memory_order_relaxed);
}
