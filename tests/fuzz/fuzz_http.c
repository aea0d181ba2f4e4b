/*
 * fuzz_http: daemon/http.c's server, the way the daemon starts it (its
 * default limits, a token, a snapshot directory, the three callbacks, a
 * status page), on arbitrary bytes from a TCP client. The server is started
 * once, on 127.0.0.1 and a port of the kernel's choice, over a scratch
 * directory that snapshot_publish() filled with versions 7 and 8 (latest
 * = 8), a file "secret", a version 10 that is a symlink to it and a version
 * 11 that is a FIFO. Each input goes to the server on a new connection:
 *   - all of it at once, then the client's end of the stream (shutdown
 *     SHUT_WR), so the server answers what is complete and closes without
 *     waiting for any deadline: no sleeps, and reading ends at its close;
 *   - or, when it holds a line "##" (the first "\n##\n"), the bytes before
 *     that line's "##", then, once the server has answered them (or at
 *     once when they hold no blank line, so no request is complete, or
 *     after FUZZ_HTTP_SPLIT_MS), the bytes after it on the same connection:
 *     a second request on a kept-alive connection.
 * Of what comes back it checks what http.h and docs/METRICS.md promise,
 * for any input:
 *   - the server closes the connection within FUZZ_HTTP_WAIT_MS of the end
 *     of the input, and then still answers GET /healthz with 200 "ok" on a
 *     new connection;
 *   - the bytes are responses one after another, each "HTTP/1.1 " and a
 *     3-digit status, whole unless the stream ended in a reset, each body
 *     as long as its Content-Length says (none after a 1xx or a 304, and
 *     none after a HEAD's answer, which is taken for one only when the
 *     input holds "HEAD"); no 5xx but 505 (libmicrohttpd's own answer to
 *     HTTP/2 and later, which tests/http_abuse.sh accepts too), and
 *     http_stats() counts no 5xx. One defect of libmicrohttpd 0.9.75 is
 *     let through, exactly: its own 400 for a malformed Content-Length
 *     and 413 for one too large send the header block twice (found here;
 *     derrd cannot avoid it);
 *   - a 401 says "WWW-Authenticate: Bearer";
 *   - without the token anywhere in the input: no snapshot response (no
 *     ETag, no X-Derrd-Snapshot-Version, no 304), no 32-byte slice of a
 *     snapshot file anywhere in the bytes, and neither the metrics, the
 *     status nor the ready callback called (/ and /healthz alone are open);
 *   - with it: a snapshot response is a 200 or 304 of version 7 or 8 whose
 *     ETag and X-Derrd-Snapshot-Version agree, whose Content-Length is that
 *     file's size (a 304's too), and whose body, when there is one, is that
 *     file byte for byte; every other response holds no slice of a file;
 *   - "secret" (behind the symlink, or one ".." away) never comes back.
 * The metrics and status callbacks and the page answer fixed texts, and
 * the ready callback says ready: no path of the server may give a 5xx.
 */
#include <dirent.h>
#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "daemon/http.h"
#include "io/fsutil.h"
#include "io/log.h"
#include "io/snapshot.h"
#include "tests/fuzz/fuzzutil.h"
#include "tests/httpwire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HTTP_TOKEN "fuzz-t0ken-Q7"
#define FUZZ_HTTP_SPLIT "\n##\n"
#define FUZZ_HTTP_WAIT_MS 5000 /* the server's close after the input's end; beyond: a hang */
#define FUZZ_HTTP_SPLIT_MS 200 /* the wait for a first answer before the second part */
#define FUZZ_HTTP_CONNECT_TRIES 1000
#define FUZZ_HTTP_MAX_READ (16u << 20) /* far above what any input of max_len can ask for */
#define FUZZ_HTTP_SLICE 32
#define FUZZ_HTTP_SECRET "fuzz-http TOPSECRET: never served"

static const char fuzz_http_page[] = "<!doctype html><title>derrd fuzz</title>";
static const char fuzz_http_metrics_text[] = "# TYPE derrd_fuzz gauge\nderrd_fuzz 1\n";
static const char fuzz_http_status_text[] = "{\"fuzz\":1}";

static http_t *fuzz_http_server;
static uint16_t fuzz_http_port;
static atomic_uint fuzz_http_calls; /* metrics, status and ready callbacks during an input */
static unsigned char *fuzz_http_file[2]; /* versions 7 and 8, as on disk */
static size_t fuzz_http_file_len[2];

/* ---- the server ------------------------------------------------------------ */

static int fuzz_http_text(const char *text, char **body, size_t *len)
{
    atomic_fetch_add(&fuzz_http_calls, 1);
    *len = strlen(text);
    *body = strdup(text);
    return *body ? 0 : -ENOMEM;
}

static int fuzz_http_metrics(void *ud, char **body, size_t *len)
{
    (void)ud;
    return fuzz_http_text(fuzz_http_metrics_text, body, len);
}

static int fuzz_http_status(void *ud, char **body, size_t *len)
{
    (void)ud;
    return fuzz_http_text(fuzz_http_status_text, body, len);
}

static int fuzz_http_ready(void *ud, char *why, size_t whylen)
{
    (void)ud;
    (void)why;
    (void)whylen;
    atomic_fetch_add(&fuzz_http_calls, 1);
    return 1;
}

static void fuzz_http_stop(void)
{
    http_stop(fuzz_http_server);
    fuzz_http_server = NULL;
    for (int k = 0; k < 2; k++)
        free(fuzz_http_file[k]);
}

/* Publishes versions 7 and 8 into dir the daemon's way and keeps their
 * bytes. */
static void fuzz_http_publish(const char *dir)
{
    float ue[2 * 4], ie[3 * 4];
    const char *uid[2] = { "u1", "u2" }, *iid[3] = { "i1", "i2", "i3" };
    const uint16_t ulen[2] = { 2, 2 }, ilen[3] = { 2, 2, 2 };
    char err[512], path[4096];
    for (int k = 0; k < 2; k++) {
        for (int j = 0; j < 8; j++)
            ue[j] = 0.25f * (float)(j + k) - 0.5f;
        for (int j = 0; j < 12; j++)
            ie[j] = 0.125f * (float)(j % 5 + k) - 0.25f;
        snapshot_desc_t d = { .version = 7u + (unsigned)k, .created_ms = 1700000000000ull,
                              .round = 7u + (unsigned)k, .dim = 4, .n_users = 2, .n_items = 3,
                              .user_emb = ue, .item_emb = ie, .user_ids = uid,
                              .user_id_len = ulen, .item_ids = iid, .item_id_len = ilen,
                              .topic = "events", .quality = { 0.5, 0.25, 0.5, 0.25, 2 } };
        if (snapshot_publish(dir, &d, 3, 2, err, sizeof(err)) < 0) {
            fprintf(stderr, "fuzz_http: %s\n", err);
            abort();
        }
        snapshot_path(dir, d.version, path, sizeof(path));
        if (fsutil_read_all(path, 1 << 20, &fuzz_http_file[k], &fuzz_http_file_len[k], err,
                            sizeof(err)) < 0) {
            fprintf(stderr, "fuzz_http: %s\n", err);
            abort();
        }
        FUZZ_CHECK(fuzz_http_file_len[k] >= 2 * FUZZ_HTTP_SLICE);
    }
}

static void fuzz_http_setup(void)
{
    log_setup(LOG_LVL_ERR - 1, 0); /* the inputs provoke the server's warnings on purpose */
    const char *dir = fuzz_scratch_dir();
    fuzz_http_publish(dir);
    char path[4096], secret[4096];
    fuzz_scratch_write("secret", FUZZ_HTTP_SECRET, strlen(FUZZ_HTTP_SECRET), secret,
                       sizeof(secret));
    snapshot_path(dir, 10, path, sizeof(path));
    FUZZ_CHECK(symlink(secret, path) == 0);
    snapshot_path(dir, 11, path, sizeof(path));
    FUZZ_CHECK(mkfifo(path, 0600) == 0);

    http_cfg_t cfg = { .token = FUZZ_HTTP_TOKEN, .snapshot_dir = dir,
                       .metrics = fuzz_http_metrics, .status = fuzz_http_status,
                       .ready = fuzz_http_ready, .page = fuzz_http_page,
                       .page_len = sizeof(fuzz_http_page) - 1 };
    char err[512] = "";
    if (http_start(&fuzz_http_server, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    fuzz_http_port = http_port(fuzz_http_server);
    atexit(fuzz_http_stop); /* before the scratch directory goes (atexit is LIFO) */
}

/* ---- a client -------------------------------------------------------------- */

static uint64_t fuzz_http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A connection to the server. Out of local ports (thousands of
 * connections a second, each leaving a TIME_WAIT behind on one side) is
 * the harness's limit, not the server's: tried again, at most
 * FUZZ_HTTP_CONNECT_TRIES times. Any other failure names its errno. */
static int fuzz_http_connect(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(fuzz_http_port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int k = 0;; k++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        struct timeval tv = { FUZZ_HTTP_WAIT_MS / 1000, 0 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin)), e = errno;
        if (rc < 0 && e == EINTR) {
            /* libFuzzer's timer signal: the handshake goes on meanwhile */
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            socklen_t len = sizeof(e);
            int n;
            while ((n = poll(&pfd, 1, FUZZ_HTTP_WAIT_MS)) < 0 && errno == EINTR)
                ;
            e = ETIMEDOUT;
            if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0)
                rc = 0;
        }
        if (rc == 0)
            return fd;
        close(fd);
        if (e != EADDRNOTAVAIL || k == FUZZ_HTTP_CONNECT_TRIES) {
            char why[128];
            snprintf(why, sizeof(why), "connect to the server: %s (try %d)", strerror(e), k + 1);
            fuzz_fail(__FILE__, __LINE__, why);
        }
        sched_yield();
    }
}

/* Closes with a reset: the stream was read to its end, and thousands of
 * connections a second must not pile up in TIME_WAIT. */
static void fuzz_http_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* Sends what the server takes of data; it may answer and close before it
 * has read everything, which is no failure. */
static void fuzz_http_send(int fd, const uint8_t *data, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

typedef struct {
    char *buf;
    size_t len, cap;
    int closed; /* 1: end of stream; 2: reset */
} fuzz_http_in_t;

/* Reads into in until the server ends the stream or until_ms (what has
 * come by then is read in any case); with stop_at_head, also as soon as a
 * whole header block has come. Returns 0 when until_ms passed first. */
static int fuzz_http_read(int fd, fuzz_http_in_t *in, uint64_t until_ms, int stop_at_head)
{
    while (!in->closed) {
        if (stop_at_head && in->len && memmem(in->buf, in->len, "\r\n\r\n", 4))
            return 1;
        uint64_t now = fuzz_http_now_ms();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int rc = poll(&pfd, 1, now < until_ms ? (int)(until_ms - now) : 0);
        if (rc < 0 && errno == EINTR)
            continue;
        FUZZ_CHECK(rc >= 0);
        if (rc == 0)
            return 0;
        if (in->cap - in->len < 65536) {
            FUZZ_CHECK(in->cap < FUZZ_HTTP_MAX_READ);
            in->cap = in->cap ? 2 * in->cap : 1 << 17;
            in->buf = realloc(in->buf, in->cap + 1);
            FUZZ_CHECK(in->buf != NULL);
        }
        ssize_t n = recv(fd, in->buf + in->len, in->cap - in->len, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            in->closed = 2; /* ECONNRESET: what came before it is kept */
        else if (n == 0)
            in->closed = 1;
        else
            in->len += (size_t)n;
        in->buf[in->len] = 0;
    }
    return 1;
}

/* The server's end of the connection whose client end is fd
 * (tests/httpwire.h): libmicrohttpd accepts on its own threads. */
static int fuzz_http_server_end(int fd)
{
    int sfd = httpwire_server_end(fd, fuzz_http_port, FUZZ_HTTP_WAIT_MS);
    FUZZ_CHECK(sfd >= 0); /* never accepted */
    return sfd;
}

/* Waits until the server has read every byte sent to sfd, its end (or has
 * closed it), reading what comes back meanwhile. Only then may the end of
 * the client's stream follow: libmicrohttpd (epoll, edge-triggered) takes
 * a read that returns less than it asked for as the socket drained, so an
 * end of stream that came with the last bytes goes unseen and the
 * connection stays open until the header deadline. */
static void fuzz_http_wait_taken(int fd, int sfd, fuzz_http_in_t *in)
{
    uint64_t until = fuzz_http_now_ms() + FUZZ_HTTP_WAIT_MS;
    for (;;) {
        int queued = 0;
        if (in->closed || ioctl(sfd, SIOCINQ, &queued) < 0 || queued == 0)
            return;
        FUZZ_CHECK(fuzz_http_now_ms() < until); /* the server neither reads nor closes */
        fuzz_http_read(fd, in, fuzz_http_now_ms() + 1, 0);
    }
}

/* ---- what came back -------------------------------------------------------- */

/* Whether s[0..n) holds a FUZZ_HTTP_SLICE-byte slice of either snapshot
 * file (the server only ever sends a file whole, but a slice also finds
 * one cut short or sent from an offset). */
static int fuzz_http_model_bytes(const char *s, size_t n)
{
    for (int k = 0; k < 2; k++)
        for (size_t off = 0; off + FUZZ_HTTP_SLICE <= fuzz_http_file_len[k];
             off += FUZZ_HTTP_SLICE)
            if (memmem(s, n, fuzz_http_file[k] + off, FUZZ_HTTP_SLICE))
                return 1;
    return 0;
}

/* Digits only, below 2^63: the value, else -1. */
static int64_t fuzz_http_number(const char *s)
{
    int64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* A snapshot response: header block h[0..hn), body b[0..bn) (bn 0 when it
 * carries none: HEAD, 304), cut short by a reset when cut. */
static void fuzz_http_check_snapshot(int status, const char *h, size_t hn, const char *b,
                                     size_t bn, int cut)
{
    char etag[64], ver[64], clen[64], want[64];
    FUZZ_CHECK(status == 200 || status == 304);
    FUZZ_CHECK(httpwire_header(h, hn, "ETag", etag, sizeof(etag)));
    FUZZ_CHECK(httpwire_header(h, hn, "X-Derrd-Snapshot-Version", ver, sizeof(ver)));
    int64_t v = fuzz_http_number(ver);
    FUZZ_CHECK(v == 7 || v == 8);
    snprintf(want, sizeof(want), "\"%s\"", ver);
    FUZZ_CHECK(strcmp(etag, want) == 0);
    size_t len = fuzz_http_file_len[v - 7];
    FUZZ_CHECK(httpwire_header(h, hn, "Content-Length", clen, sizeof(clen)));
    FUZZ_CHECK(fuzz_http_number(clen) == (int64_t)len);
    FUZZ_CHECK(bn == 0 || (status == 200 && (cut ? bn < len : bn == len) &&
                           memcmp(b, fuzz_http_file[v - 7], bn) == 0));
}

/* The responses in in, one after another; token: the input holds the
 * token; head: it holds "HEAD", so an answer may be a HEAD's. */
static void fuzz_http_check_responses(const fuzz_http_in_t *in, int token, int head)
{
    static const char ver[] = "HTTP/1.1 ";
    const size_t vn = sizeof(ver) - 1;
    size_t pos = 0;
    while (pos < in->len) {
        const char *p = in->buf + pos;
        size_t left = in->len - pos;
        /* a stream cut by a reset may end anywhere; by its end, only
         * after a whole response */
        if (left < vn + 4) {
            FUZZ_CHECK(in->closed == 2);
            FUZZ_CHECK(memcmp(p, ver, left < vn ? left : vn) == 0);
            return;
        }
        FUZZ_CHECK(memcmp(p, ver, vn) == 0);
        for (size_t k = vn; k < vn + 3; k++)
            FUZZ_CHECK(p[k] >= '0' && p[k] <= '9');
        FUZZ_CHECK(p[vn + 3] == ' ' || p[vn + 3] == '\r');
        int status = (p[vn] - '0') * 100 + (p[vn + 1] - '0') * 10 + (p[vn + 2] - '0');
        FUZZ_CHECK(status >= 100 && (status < 500 || status == 505));
        const char *end = memmem(p, left, "\r\n\r\n", 4);
        char v[64];
        if (!end) {
            FUZZ_CHECK(in->closed == 2);
            return;
        }
        size_t hn = (size_t)(end + 4 - p), rest = left - hn;
        /* libmicrohttpd 0.9.75's own 400 for a malformed Content-Length
         * and 413 for one too large send their header block twice, byte
         * for byte (a defect of the library, which parses that header
         * before derrd sees the request; bench/RELIABILITY.md): that, and
         * only that, is let through. */
        if ((status == 400 || status == 413) && rest >= hn && memcmp(p + hn, p, hn) == 0 &&
            !httpwire_header(p, hn, "Content-Type", v, sizeof(v))) {
            pos += hn;
            continue;
        }
        /* No body after a 1xx, a 304 or a HEAD's answer (which still says
         * the GET's Content-Length): the next response, or the end, follows
         * at once. No body the server sends begins like a status line. */
        int bodiless = status < 200 || status == 304 ||
                       (head && (rest == 0 || memcmp(p + hn, ver, rest < vn ? rest : vn) == 0));
        size_t bn = 0;
        int cut = 0;
        if (!bodiless) {
            int64_t cl = -1;
            if (httpwire_header(p, hn, "Content-Length", v, sizeof(v)))
                cl = fuzz_http_number(v);
            bn = cl < 0 ? rest : (size_t)cl;
            if (bn > rest) {
                FUZZ_CHECK(in->closed == 2);
                bn = rest;
                cut = 1;
            }
        }
        if (status == 401)
            FUZZ_CHECK(httpwire_header(p, hn, "WWW-Authenticate", v, sizeof(v)) &&
                       strcmp(v, "Bearer") == 0);
        int snap = status == 304 || httpwire_header(p, hn, "ETag", v, sizeof(v)) ||
                   httpwire_header(p, hn, "X-Derrd-Snapshot-Version", v, sizeof(v));
        if (snap) {
            FUZZ_CHECK(token);
            fuzz_http_check_snapshot(status, p, hn, p + hn, bn, cut);
        } else {
            FUZZ_CHECK(!fuzz_http_model_bytes(p, hn + bn));
        }
        pos += hn + bn;
    }
}

/* GET /healthz on a new connection: 200 "ok". */
static void fuzz_http_check_alive(void)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
    int fd = fuzz_http_connect();
    fuzz_http_send(fd, (const uint8_t *)req, sizeof(req) - 1);
    fuzz_http_in_t in = { 0 };
    FUZZ_CHECK(fuzz_http_read(fd, &in, fuzz_http_now_ms() + FUZZ_HTTP_WAIT_MS, 0));
    fuzz_http_close(fd);
    FUZZ_CHECK(in.len > 16 && memcmp(in.buf, "HTTP/1.1 200 ", 13) == 0);
    FUZZ_CHECK(memcmp(in.buf + in.len - 6, "\r\n\r\nok", 6) == 0);
    free(in.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_http_server)
        fuzz_http_setup();
    int token = memmem(data, size, FUZZ_HTTP_TOKEN, sizeof(FUZZ_HTTP_TOKEN) - 1) != NULL;
    atomic_store(&fuzz_http_calls, 0);

    const uint8_t *cut = memmem(data, size, FUZZ_HTTP_SPLIT, sizeof(FUZZ_HTTP_SPLIT) - 1);
    size_t first = cut ? (size_t)(cut - data) + 1 : size;
    int fd = fuzz_http_connect(), sfd = fuzz_http_server_end(fd);
    fuzz_http_in_t in = { 0 };
    fuzz_http_send(fd, data, first);
    if (cut) {
        /* Waits for the first answer only when a request can be complete
         * (a blank line); the bytes after the cut then arrive on their own. */
        if (memmem(data, first, "\n\r\n", 3) || memmem(data, first, "\n\n", 2))
            fuzz_http_read(fd, &in, fuzz_http_now_ms() + FUZZ_HTTP_SPLIT_MS, 1);
        size_t skip = first + sizeof(FUZZ_HTTP_SPLIT) - 2;
        if (!in.closed)
            fuzz_http_send(fd, data + skip, size - skip);
    }
    fuzz_http_wait_taken(fd, sfd, &in);
    /* The end of the stream, unless the server has closed already: a FIN
     * after its own would leave a TIME_WAIT on its side for each such
     * input, where the reset of fuzz_http_close leaves none. */
    struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };
    if (!in.closed && !(poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP))))
        shutdown(fd, SHUT_WR);
    /* The input is over: the server answers what is complete and closes. */
    FUZZ_CHECK(fuzz_http_read(fd, &in, fuzz_http_now_ms() + FUZZ_HTTP_WAIT_MS, 0));
    fuzz_http_close(fd);

    fuzz_http_check_responses(&in, token, memmem(data, size, "HEAD", 4) != NULL);
    FUZZ_CHECK(!memmem(in.buf ? in.buf : "", in.len, FUZZ_HTTP_SECRET, strlen(FUZZ_HTTP_SECRET)));
    if (!token) {
        FUZZ_CHECK(!fuzz_http_model_bytes(in.buf ? in.buf : "", in.len));
        FUZZ_CHECK(atomic_load(&fuzz_http_calls) == 0);
    }
    free(in.buf);

    fuzz_http_check_alive();
    http_stats_t st;
    http_stats(fuzz_http_server, &st);
    FUZZ_CHECK(st.status_5xx == 0);
    return 0;
}
