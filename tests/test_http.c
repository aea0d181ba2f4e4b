/*
 * Tests of the daemon's HTTP endpoints (daemon/http.h), spoken to over raw
 * sockets by a tiny client below: snapshots by ETag and version, 304s, HEAD,
 * path traversal and bad `latest` links, methods, the bearer token, the
 * readiness and metrics callbacks, an over-long header, start-up errors,
 * strict request rules (Host, header fields, no body on a GET), the per-
 * address limit, port 0, the header deadline that closes slow clients (and
 * spares slow downloads), the minimum rate and the idle timeout that reset
 * slow readers, and 32 parallel downloads while `latest` is replaced and
 * old files deleted underneath them (every body must be exactly one version,
 * matching its ETag).
 *
 * Every test works in its own mkdtemp directory under /tmp and removes it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "daemon/http.h"
#include "io/log.h"
#include "test.h"
#include "testutil.h"
#include "tests/httpwire.h"

/* ---- a tiny HTTP client ---------------------------------------------------- */

typedef struct {
    int status;       /* 0: no status line came back */
    char *raw;        /* everything read, NUL-terminated */
    size_t raw_len;
    const char *head; /* into raw: the header block, up to the blank line */
    size_t head_len;
    const char *body; /* into raw: the rest */
    size_t body_len;
} http_test_resp_t;

static void http_test_resp_free(http_test_resp_t *r)
{
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

/* Sends req (raw bytes) to 127.0.0.1:port and reads until the server closes.
 * Returns 0, or a negative errno when it could not connect or send. A reset
 * while reading keeps what came before it. */
static int http_test_raw(uint16_t port, const char *req, size_t req_len, http_test_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { 30, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    for (size_t off = 0; off < req_len;) {
        ssize_t n = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the server may answer (and close) before reading it all */
        off += (size_t)n;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        if (len == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    r->raw = buf;
    r->raw_len = len;
    char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (len >= 12 && memcmp(buf, "HTTP/1.", 7) == 0 && end) {
        r->status = atoi(buf + 9);
        r->head = buf;
        r->head_len = (size_t)(end - buf) + 2;
        r->body = end + 4;
        r->body_len = len - (size_t)(end + 4 - buf);
    }
    return 0;
}

/* METHOD path with extra header lines (each ending in \r\n, may be ""),
 * one request per connection. */
static int http_test_req(uint16_t port, const char *method, const char *path, const char *extra,
                         http_test_resp_t *r)
{
    size_t cap = strlen(method) + strlen(path) + strlen(extra) + 128;
    char *req = malloc(cap);
    if (!req)
        return -ENOMEM;
    int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n",
                     method, path, extra);
    int rc = http_test_raw(port, req, (size_t)n, r);
    free(req);
    return rc;
}

static int http_test_get(uint16_t port, const char *path, const char *extra, http_test_resp_t *r)
{
    return http_test_req(port, "GET", path, extra, r);
}

/* The value of header name in r (first one), copied into out; 0 if absent. */
static int http_test_header(const http_test_resp_t *r, const char *name, char *out, size_t cap)
{
    return r->head && httpwire_header(r->head, r->head_len, name, out, cap);
}

static int http_test_body_is(const http_test_resp_t *r, const void *data, size_t len)
{
    return r->body && r->body_len == len && memcmp(r->body, data, len) == 0;
}

/* ---- snapshot files -------------------------------------------------------- */

/* Version v's content: a xorshift stream seeded by v, so any download can be
 * checked against it without keeping every version in memory. */
static uint64_t http_test_seed(uint64_t v) { return (v + 1) * 0x9E3779B97F4A7C15ull; }

static uint64_t http_test_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void http_test_fill(uint64_t v, unsigned char *buf, size_t len)
{
    uint64_t s = http_test_seed(v);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t x = http_test_next(&s);
        memcpy(buf + i, &x, len - i < 8 ? len - i : 8);
    }
}

static int http_test_is_version(uint64_t v, const char *buf, size_t len)
{
    uint64_t s = http_test_seed(v);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t x = http_test_next(&s);
        if (memcmp(buf + i, &x, len - i < 8 ? len - i : 8) != 0)
            return 0;
    }
    return 1;
}

static void http_test_name(char *buf, size_t cap, const char *dir, uint64_t v)
{
    snprintf(buf, cap, "%s/student-%020" PRIu64 ".dsnap", dir, v);
}

/* Writes version v (len bytes of its content) the way a publisher does:
 * a temporary name, then rename. Returns 0 or -1. */
static int http_test_write(const char *dir, uint64_t v, size_t len)
{
    unsigned char *data = malloc(len ? len : 1);
    char path[512], tmp[600];
    if (!data)
        return -1;
    http_test_fill(v, data, len);
    http_test_name(path, sizeof(path), dir, v);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int rc = f && fwrite(data, 1, len, f) == len ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    free(data);
    return rc == 0 && rename(tmp, path) == 0 ? 0 : -1;
}

/* Points dir/latest at target (any string) by symlink + rename. */
static int http_test_latest(const char *dir, const char *target)
{
    char tmp[512], latest[512];
    snprintf(tmp, sizeof(tmp), "%s/latest.tmp", dir);
    snprintf(latest, sizeof(latest), "%s/latest", dir);
    unlink(tmp);
    if (symlink(target, tmp) < 0)
        return -1;
    return rename(tmp, latest);
}

static int http_test_latest_v(const char *dir, uint64_t v)
{
    char name[64];
    snprintf(name, sizeof(name), "student-%020" PRIu64 ".dsnap", v);
    return http_test_latest(dir, name);
}

static int http_test_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Runs body in a fresh directory and removes it afterwards, also when body
 * returns early from a REQUIRE. */
static void http_test_in_dir(void (*body)(const char *dir))
{
    char dir[] = "/tmp/derrd-test-http-XXXXXX";
    if (!mkdtemp(dir)) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return;
    }
    log_setup(LOG_LVL_ERR - 1, 0); /* the tests provoke the warnings on purpose */
    body(dir);
    CHECK(nftw(dir, http_test_rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

static http_t *http_test_start(const char *dir, const char *token)
{
    http_cfg_t cfg = { .snapshot_dir = dir, .token = token };
    char err[256] = "";
    http_t *h = NULL;
    int rc = http_start(&h, &cfg, err, sizeof(err));
    if (rc < 0)
        test_fail(__FILE__, __LINE__, "http_start: %d %s", rc, err);
    return h;
}

/* ---- snapshots by ETag and version ---------------------------------------- */

#define HTTP_TEST_SMALL 100003 /* not a multiple of 8 or of a page */

static void http_test_latest_body(const char *dir)
{
    http_t *h = http_test_start(dir, NULL);
    REQUIRE(h);
    uint16_t port = http_port(h);
    CHECK(port != 0);
    http_test_resp_t r;
    char v[256];

    CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(r.body_len > 0 && r.body_len < 100);
    http_test_resp_free(&r);

    unsigned char *data = malloc(HTTP_TEST_SMALL);
    REQUIRE(data);
    http_test_fill(7, data, HTTP_TEST_SMALL);
    REQUIRE(http_test_write(dir, 7, HTTP_TEST_SMALL) == 0);
    CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 404); /* a file but no latest yet */
    http_test_resp_free(&r);
    REQUIRE(http_test_latest_v(dir, 7) == 0);

    CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, data, HTTP_TEST_SMALL));
    CHECK(http_test_header(&r, "ETag", v, sizeof(v)) && strcmp(v, "\"7\"") == 0);
    CHECK(http_test_header(&r, "X-Derrd-Snapshot-Version", v, sizeof(v)) && strcmp(v, "7") == 0);
    CHECK(http_test_header(&r, "Content-Type", v, sizeof(v)) &&
          strcmp(v, "application/octet-stream") == 0);
    CHECK(http_test_header(&r, "Cache-Control", v, sizeof(v)) && strcmp(v, "no-cache") == 0);
    CHECK(http_test_header(&r, "Content-Length", v, sizeof(v)) && atol(v) == HTTP_TEST_SMALL);
    http_test_resp_free(&r);

    /* If-None-Match: the current tag in every spelling gives 304 (ETag, no
     * body); another tag gives the file. */
    static const char *const hit[] = { "If-None-Match: \"7\"\r\n",
                                       "If-None-Match: W/\"7\"\r\n",
                                       "If-None-Match: \"5\", \"6\",W/\"7\"\r\n",
                                       "If-None-Match: *\r\n",
                                       "If-None-Match: \"6\"\r\nIf-None-Match: \"7\"\r\n" };
    for (size_t k = 0; k < sizeof(hit) / sizeof(hit[0]); k++) {
        CHECK(http_test_get(port, "/v1/snapshot", hit[k], &r) == 0);
        CHECK_EQ_INT(r.status, 304);
        CHECK_EQ_INT(r.body_len, 0);
        CHECK(http_test_header(&r, "ETag", v, sizeof(v)) && strcmp(v, "\"7\"") == 0);
        http_test_resp_free(&r);
    }
    static const char *const miss[] = { "If-None-Match: \"6\"\r\n", "If-None-Match: \"07\"\r\n",
                                        "If-None-Match: 7\r\n", "If-None-Match: \"7\r\n",
                                        "If-None-Match: \"77\", \"\"\r\n" };
    for (size_t k = 0; k < sizeof(miss) / sizeof(miss[0]); k++) {
        CHECK(http_test_get(port, "/v1/snapshot", miss[k], &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(http_test_body_is(&r, data, HTTP_TEST_SMALL));
        http_test_resp_free(&r);
    }

    /* HEAD: the headers of GET, no body. */
    CHECK(http_test_req(port, "HEAD", "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 0);
    CHECK(http_test_header(&r, "Content-Length", v, sizeof(v)) && atol(v) == HTTP_TEST_SMALL);
    CHECK(http_test_header(&r, "ETag", v, sizeof(v)) && strcmp(v, "\"7\"") == 0);
    http_test_resp_free(&r);

    /* By version, with or without leading zeros. */
    static const char *const by_version[] = { "/v1/snapshot/7", "/v1/snapshot/00000000000000000007",
                                              "/v1/snapshot/0007",
                                              "/v1/snapshot/000000000000000000000000007" };
    for (size_t k = 0; k < sizeof(by_version) / sizeof(by_version[0]); k++) {
        CHECK(http_test_get(port, by_version[k], "", &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(http_test_body_is(&r, data, HTTP_TEST_SMALL));
        CHECK(http_test_header(&r, "ETag", v, sizeof(v)) && strcmp(v, "\"7\"") == 0);
        http_test_resp_free(&r);
    }
    CHECK(http_test_get(port, "/v1/snapshot/7", "If-None-Match: \"7\"\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.body_len, 0);
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/v1/snapshot/8", "", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    http_test_resp_free(&r);

    /* A newer version moves latest; the old one stays reachable by number. */
    REQUIRE(http_test_write(dir, 8, 1000) == 0);
    REQUIRE(http_test_latest_v(dir, 8) == 0);
    CHECK(http_test_get(port, "/v1/snapshot", "If-None-Match: \"7\"\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 1000);
    CHECK(http_test_is_version(8, r.body, r.body_len));
    CHECK(http_test_header(&r, "ETag", v, sizeof(v)) && strcmp(v, "\"8\"") == 0);
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/v1/snapshot/7", "", &r) == 0);
    CHECK(http_test_body_is(&r, data, HTTP_TEST_SMALL));
    http_test_resp_free(&r);

    /* Two requests on one kept-alive connection. */
    static const char two[] = "GET /v1/snapshot/8 HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(http_test_raw(port, two, sizeof(two) - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    if (r.status == 200 && r.body_len > 1000) {
        CHECK(http_test_is_version(8, r.body, 1000));
        CHECK(memmem(r.body + 1000, r.body_len - 1000, "HTTP/1.1 200", 12) != NULL);
        CHECK(r.body_len >= 2 && memcmp(r.body + r.body_len - 2, "ok", 2) == 0);
    } else {
        CHECK(!"two responses on one connection");
    }
    http_test_resp_free(&r);
    /* a 304 on a kept-alive connection: its Content-Length is the file's, but
     * no body follows it */
    static const char two304[] = "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"8\"\r\n\r\n"
                                 "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(http_test_raw(port, two304, sizeof(two304) - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    CHECK(http_test_header(&r, "Content-Length", v, sizeof(v)) && atol(v) == 1000);
    CHECK(r.body && r.body_len > 12 && memcmp(r.body, "HTTP/1.1 200", 12) == 0);
    CHECK(r.body_len >= 2 && memcmp(r.body + r.body_len - 2, "ok", 2) == 0);
    http_test_resp_free(&r);

    http_stats_t st;
    http_stats(h, &st);
    CHECK_EQ_INT(st.requests, 26);
    CHECK_EQ_INT(st.status_2xx, 16);
    CHECK_EQ_INT(st.status_304, 7);
    CHECK_EQ_INT(st.status_5xx, 0);
    CHECK_EQ_INT(st.status_4xx, 3);
    CHECK(st.bytes_sent >= 10ull * HTTP_TEST_SMALL);
    free(data);
    http_stop(h);
}

TEST(http_snapshot_latest_and_versions) { http_test_in_dir(http_test_latest_body); }

/* ---- traversal and bad links --------------------------------------------- */

static void http_test_traversal_body(const char *dir)
{
    char path[512], v[64];
    http_t *h = http_test_start(dir, NULL);
    REQUIRE(h);
    uint16_t port = http_port(h);
    http_test_resp_t r;
    REQUIRE(http_test_write(dir, 7, 5000) == 0);
    REQUIRE(http_test_latest_v(dir, 7) == 0);
    /* a secret next to the snapshots and one level up */
    snprintf(path, sizeof(path), "%s/secret", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("TOPSECRET", f);
    fclose(f);

    static const char *const bad[] = {
        "/v1/snapshot/../x",         "/v1/snapshot/..",
        "/v1/snapshot/%2e%2e",       "/v1/snapshot/%2e%2e%2fsecret",
        "/v1/snapshot/..%2fsecret",  "/v1/snapshot/%2e%2e/%2e%2e/etc/passwd",
        "/v1/snapshot/secret",       "/v1/snapshot/latest",
        "/v1/snapshot/7a",           "/v1/snapshot/-7",
        "/v1/snapshot/+7",           "/v1/snapshot/%207",
        "/v1/snapshot/7%00",         "/v1/snapshot/",
        "/v1/snapshot//7",           "/v1/snapshot/7/",
        "/v1/snapshot/0x7",          "/v1/snapshot/18446744073709551616",
        "/v1/snapshot/99999999999999999999999",
        "/v1/snapshot/student-00000000000000000007.dsnap",
        "/v1/snapshotx",             "/v1/snapshot/../../../../../../etc/passwd",
        "/v1/../v1/snapshot/7",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        CHECK(http_test_get(port, bad[k], "", &r) == 0);
        if (r.status != 404 && r.status != 400)
            test_fail(__FILE__, __LINE__, "%s: status %d", bad[k], r.status);
        CHECK(!memmem(r.raw, r.raw_len, "TOPSECRET", 9));
        CHECK(!memmem(r.raw, r.raw_len, "root:", 5));
        CHECK(r.body_len < 100);
        http_test_resp_free(&r);
    }

    /* latest pointing anywhere but a snapshot name in dir: 404, never the file */
    REQUIRE(http_test_write(dir, 9, 100) == 0); /* reachable by a bad spelling? */
    char abs7[512];
    http_test_name(abs7, sizeof(abs7), dir, 7);
    static const char *const bad_targets[] = {
        "../../etc/passwd", "/etc/passwd", "secret", "student-7.dsnap",
        "student-0000000000000000007.dsnap", "student-000000000000000000007.dsnap",
        "./student-00000000000000000009.dsnap", "student-00000000000000000009.dsnap/",
        "student-00000000000000000009.dsnap.tmp", "student-0000000000000000000a.dsnap",
        "../student-00000000000000000009.dsnap", "latest",
        NULL /* abs7 */,
    };
    for (size_t k = 0; k < sizeof(bad_targets) / sizeof(bad_targets[0]); k++) {
        const char *t = bad_targets[k] ? bad_targets[k] : abs7;
        REQUIRE(http_test_latest(dir, t) == 0);
        CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
        if (r.status != 404)
            test_fail(__FILE__, __LINE__, "latest -> %s: status %d", t, r.status);
        CHECK(!memmem(r.raw, r.raw_len, "root:", 5));
        CHECK(!memmem(r.raw, r.raw_len, "TOPSECRET", 9));
        CHECK(r.body_len < 100);
        http_test_resp_free(&r);
    }

    /* A snapshot name that is itself a symlink, a directory, a FIFO, or
     * missing: 404 by latest and by version, and no hang. */
    http_test_name(path, sizeof(path), dir, 10);
    REQUIRE(symlink("/etc/passwd", path) == 0);
    http_test_name(path, sizeof(path), dir, 11);
    REQUIRE(mkdir(path, 0700) == 0);
    http_test_name(path, sizeof(path), dir, 12);
    REQUIRE(mkfifo(path, 0600) == 0);
    for (uint64_t ver = 10; ver <= 13; ver++) {
        REQUIRE(http_test_latest_v(dir, ver) == 0);
        CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
        CHECK_EQ_INT(r.status, 404);
        CHECK(!memmem(r.raw, r.raw_len, "root:", 5));
        http_test_resp_free(&r);
        snprintf(path, sizeof(path), "/v1/snapshot/%" PRIu64, ver);
        CHECK(http_test_get(port, path, "", &r) == 0);
        CHECK_EQ_INT(r.status, 404);
        http_test_resp_free(&r);
    }

    /* latest as a plain file (not a symlink): 404 */
    snprintf(path, sizeof(path), "%s/latest", dir);
    REQUIRE(unlink(path) == 0);
    f = fopen(path, "w");
    REQUIRE(f);
    fputs("student-00000000000000000007.dsnap", f);
    fclose(f);
    CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    http_test_resp_free(&r);

    /* and back to a good link: served again */
    REQUIRE(http_test_latest_v(dir, 9) == 0);
    CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body_len == 100 && http_test_is_version(9, r.body, 100));
    CHECK(http_test_header(&r, "ETag", v, sizeof(v)) && strcmp(v, "\"9\"") == 0);
    http_test_resp_free(&r);

    http_stats_t st;
    http_stats(h, &st);
    CHECK_EQ_INT(st.status_5xx, 0);
    http_stop(h);
}

TEST(http_snapshot_traversal) { http_test_in_dir(http_test_traversal_body); }

/* A latest that names a file deleted by hand: 404 as when none was
 * published, and the log says which file is missing (a fresh server: its
 * warnings are limited to one a second). */
static void http_test_dangling_body(const char *dir)
{
    http_t *h = http_test_start(dir, NULL);
    REQUIRE(h);
    uint16_t port = http_port(h);
    REQUIRE(http_test_write(dir, 7, 100) == 0);
    REQUIRE(http_test_latest_v(dir, 7) == 0);
    char path[600], logpath[600];
    http_test_name(path, sizeof(path), dir, 7);
    REQUIRE(unlink(path) == 0);
    snprintf(logpath, sizeof(logpath), "%s/log", dir);
    http_test_resp_t r;
    log_setup(LOG_LVL_WARNING, 0); /* http_test_in_dir silenced the warnings */
    int saved = test_stderr_begin(logpath);
    int got = http_test_get(port, "/v1/snapshot", "", &r);
    char *log = test_stderr_end(saved, logpath);
    CHECK(got == 0);
    CHECK_EQ_INT(r.status, 404);
    http_test_resp_free(&r);
    if (!(log && strstr(log, "latest names student-00000000000000000007.dsnap, which does not "
                             "exist")))
        test_fail(__FILE__, __LINE__, "not logged: %s", log ? log : "(none)");
    free(log);
    http_stop(h);
}

TEST(http_snapshot_latest_names_a_missing_file) { http_test_in_dir(http_test_dangling_body); }

/* ---- methods, paths ------------------------------------------------------- */

static void http_test_methods_body(const char *dir)
{
    http_t *h = http_test_start(dir, NULL);
    REQUIRE(h);
    uint16_t port = http_port(h);
    http_test_resp_t r;
    char v[64];
    REQUIRE(http_test_write(dir, 7, 5000) == 0);
    REQUIRE(http_test_latest_v(dir, 7) == 0);

    static const char *const methods[] = { "POST", "PUT", "DELETE", "PATCH", "OPTIONS" };
    for (size_t k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
        CHECK(http_test_req(port, methods[k], "/v1/snapshot", "", &r) == 0);
        CHECK_EQ_INT(r.status, 405);
        CHECK(http_test_header(&r, "Allow", v, sizeof(v)) && strcmp(v, "GET, HEAD") == 0);
        CHECK(r.body_len < 100);
        http_test_resp_free(&r);
    }
    /* a POST with a body, answered before the body is read */
    static const char post[] = "POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               "Content-Length: 5\r\n\r\nhello";
    CHECK(http_test_raw(port, post, sizeof(post) - 1, &r) == 0);
    CHECK_EQ_INT(r.status, 405);
    http_test_resp_free(&r);

    CHECK(http_test_get(port, "/nope", "", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, "derrd", 5));
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/healthz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, "ok", 2));
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/healthz?verbose=1", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_test_resp_free(&r);
    /* no ready callback: ready; no metrics callback: 404 */
    CHECK(http_test_get(port, "/readyz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/metrics", "", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    http_test_resp_free(&r);

    http_stats_t st;
    http_stats(h, &st);
    CHECK_EQ_INT(st.requests, 12);
    CHECK_EQ_INT(st.status_4xx, 8);
    CHECK_EQ_INT(st.status_2xx, 4);
    http_stop(h);
}

TEST(http_methods_and_paths) { http_test_in_dir(http_test_methods_body); }

/* ---- bearer token --------------------------------------------------------- */

static void http_test_token_body(const char *dir)
{
    http_t *h = http_test_start(dir, "s3cret-token");
    REQUIRE(h);
    uint16_t port = http_port(h);
    http_test_resp_t r;
    char v[64];
    REQUIRE(http_test_write(dir, 7, 5000) == 0);
    REQUIRE(http_test_latest_v(dir, 7) == 0);
    unsigned char first[16];
    http_test_fill(7, first, sizeof(first));

    static const char *const denied[] = {
        "",
        "Authorization: Bearer nope\r\n",
        "Authorization: Bearer s3cret-toke\r\n",
        "Authorization: Bearer s3cret-token2\r\n",
        "Authorization: Bearer S3CRET-TOKEN\r\n",
        "Authorization: Bearers3cret-token\r\n",
        "Authorization: Basic s3cret-token\r\n",
        "Authorization: s3cret-token\r\n",
        "Authorization: Bearer\r\n",
        "X-Authorization: Bearer s3cret-token\r\n",
    };
    static const char *const paths[] = { "/v1/snapshot", "/v1/snapshot/7", "/metrics", "/readyz",
                                         "/v1/status", "/nope" };
    for (size_t k = 0; k < sizeof(denied) / sizeof(denied[0]); k++) {
        for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
            CHECK(http_test_get(port, paths[p], denied[k], &r) == 0);
            if (r.status != 401)
                test_fail(__FILE__, __LINE__, "%s with \"%s\": %d", paths[p], denied[k], r.status);
            CHECK(http_test_header(&r, "WWW-Authenticate", v, sizeof(v)) &&
                  strcmp(v, "Bearer") == 0);
            CHECK(!memmem(r.raw, r.raw_len, first, sizeof(first)));
            CHECK(r.body_len < 100);
            http_test_resp_free(&r);
        }
    }
    CHECK(http_test_req(port, "HEAD", "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK(!http_test_header(&r, "ETag", v, sizeof(v)));
    http_test_resp_free(&r);
    /* The status page holds no data: it is served without the token. */
    CHECK(http_test_get(port, "/", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(!memmem(r.raw, r.raw_len, first, sizeof(first)));
    http_test_resp_free(&r);

    static const char *const allowed[] = {
        "Authorization: Bearer s3cret-token\r\n",
        "Authorization: bearer   s3cret-token\r\n",
        "Authorization: BEARER s3cret-token  \r\n",
    };
    for (size_t k = 0; k < sizeof(allowed) / sizeof(allowed[0]); k++) {
        CHECK(http_test_get(port, "/v1/snapshot", allowed[k], &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK(r.body_len == 5000 && http_test_is_version(7, r.body, 5000));
        http_test_resp_free(&r);
    }
    CHECK(http_test_get(port, "/healthz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/readyz", allowed[0], &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_test_resp_free(&r);
    http_stop(h);
}

TEST(http_bearer_token) { http_test_in_dir(http_test_token_body); }

/* ---- readiness and metrics callbacks -------------------------------------- */

typedef struct {
    atomic_int ready;
    atomic_int metrics_fail;
    atomic_int metrics_calls;
} http_test_ud_t;

static int http_test_ready_cb(void *ud, char *why, size_t whylen)
{
    snprintf(why, whylen, "no broker");
    return atomic_load(&((http_test_ud_t *)ud)->ready);
}

static int http_test_metrics_cb(void *ud, char **body, size_t *len)
{
    http_test_ud_t *u = ud;
    atomic_fetch_add(&u->metrics_calls, 1);
    if (atomic_load(&u->metrics_fail))
        return -EIO;
    static const char text[] = "# TYPE derrd_up gauge\nderrd_up 1\n";
    *body = strdup(text);
    *len = sizeof(text) - 1;
    return *body ? 0 : -ENOMEM;
}

static int http_test_status_cb(void *ud, char **body, size_t *len)
{
    (void)ud;
    *body = strdup("{\"ok\":1}");
    *len = 8;
    return *body ? 0 : -ENOMEM;
}

static void http_test_callbacks_body(const char *dir)
{
    http_test_ud_t ud;
    atomic_init(&ud.ready, 0);
    atomic_init(&ud.metrics_fail, 0);
    atomic_init(&ud.metrics_calls, 0);
    static const char page[] = "<!doctype html><title>t</title>";
    http_cfg_t cfg = { .snapshot_dir = dir, .ready = http_test_ready_cb,
                       .metrics = http_test_metrics_cb, .status = http_test_status_cb,
                       .page = page, .page_len = sizeof(page) - 1, .ud = &ud };
    char err[256];
    http_t *h = NULL;
    REQUIRE(http_start(&h, &cfg, err, sizeof(err)) == 0);
    uint16_t port = http_port(h);
    http_test_resp_t r;
    char v[128];

    CHECK(http_test_get(port, "/readyz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK(http_test_body_is(&r, "not ready: no broker\n", 21));
    http_test_resp_free(&r);
    atomic_store(&ud.ready, 1);
    CHECK(http_test_get(port, "/readyz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, "ready", 5));
    http_test_resp_free(&r);

    CHECK(http_test_get(port, "/metrics", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, "# TYPE derrd_up gauge\nderrd_up 1\n", 33));
    CHECK(http_test_header(&r, "Content-Type", v, sizeof(v)) &&
          strstr(v, "text/plain; version=0.0.4") == v);
    http_test_resp_free(&r);
    CHECK(http_test_req(port, "HEAD", "/metrics", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 0);
    http_test_resp_free(&r);
    atomic_store(&ud.metrics_fail, 1);
    CHECK(http_test_get(port, "/metrics", "", &r) == 0);
    CHECK_EQ_INT(r.status, 500);
    http_test_resp_free(&r);
    CHECK_EQ_INT(atomic_load(&ud.metrics_calls), 3);

    CHECK(http_test_get(port, "/", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, page, sizeof(page) - 1));
    CHECK(http_test_header(&r, "Content-Type", v, sizeof(v)) && strstr(v, "text/html") == v);
    http_test_resp_free(&r);
    CHECK(http_test_get(port, "/v1/status", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, "{\"ok\":1}", 8));
    CHECK(http_test_header(&r, "Content-Type", v, sizeof(v)) &&
          strcmp(v, "application/json") == 0);
    http_test_resp_free(&r);

    http_stats_t st;
    http_stats(h, &st);
    CHECK_EQ_INT(st.requests, 7);
    CHECK_EQ_INT(st.status_5xx, 2);
    CHECK_EQ_INT(st.status_2xx, 5);
    http_stop(h);
}

TEST(http_ready_and_metrics) { http_test_in_dir(http_test_callbacks_body); }

/* ---- limits and start-up errors ------------------------------------------- */

static void http_test_limits_body(const char *dir)
{
    http_t *h = http_test_start(dir, NULL);
    REQUIRE(h);
    uint16_t port = http_port(h);
    http_test_resp_t r;

    /* one header well over the default 32 KiB of a connection */
    size_t big = 48 * 1024;
    char *hdr = malloc(big + 32);
    REQUIRE(hdr);
    memcpy(hdr, "X-Big: ", 7);
    memset(hdr + 7, 'a', big);
    memcpy(hdr + 7 + big, "\r\n", 3);
    for (int k = 0; k < 3; k++) {
        CHECK(http_test_get(port, "/healthz", hdr, &r) == 0);
        if (r.status < 400 || r.status > 499)
            test_fail(__FILE__, __LINE__, "a %zu-byte header: status %d", big, r.status);
        http_test_resp_free(&r);
    }
    /* many small headers adding up to as much */
    char *many = malloc(big + 64);
    REQUIRE(many);
    size_t off = 0;
    for (int k = 0; off + 32 < big; k++)
        off += (size_t)sprintf(many + off, "X-H%d: %020d\r\n", k, k);
    CHECK(http_test_get(port, "/healthz", many, &r) == 0);
    CHECK(r.status >= 400 && r.status <= 499);
    http_test_resp_free(&r);
    free(many);
    free(hdr);

    /* and it goes on serving */
    CHECK(http_test_get(port, "/healthz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_test_resp_free(&r);
    http_stop(h);
}

TEST(http_header_limit) { http_test_in_dir(http_test_limits_body); }

/* Port 0: the kernel picks a free port, http_port() says which, and that
 * port answers; two servers get two ports. What derrd --http-port 0 logs. */
TEST(http_port_zero)
{
    log_setup(LOG_LVL_ERR - 1, 0);
    http_cfg_t cfg = { .port = 0 };
    char err[256] = "";
    http_t *a = NULL, *b = NULL;
    REQUIRE(http_start(&a, &cfg, err, sizeof(err)) == 0);
    int rc = http_start(&b, &cfg, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    uint16_t pa = http_port(a), pb = b ? http_port(b) : 0;
    CHECK(pa != 0 && pb != 0 && pa != pb);
    http_test_resp_t r;
    CHECK(http_test_get(pa, "/healthz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(http_test_body_is(&r, "ok", 2));
    http_test_resp_free(&r);
    if (b) {
        CHECK(http_test_get(pb, "/healthz", "", &r) == 0);
        CHECK_EQ_INT(r.status, 200);
        http_test_resp_free(&r);
    }
    http_stop(b);
    http_stop(a);
}

TEST(http_start_errors)
{
    log_setup(LOG_LVL_ERR - 1, 0);
    http_stop(NULL);
    http_cfg_t cfg = { 0 };
    char err[256] = "";
    http_t *a = NULL, *b = NULL;
    REQUIRE(http_start(&a, &cfg, err, sizeof(err)) == 0);
    REQUIRE(a);
    cfg.port = http_port(a);
    err[0] = 0;
    CHECK_EQ_INT(http_start(&b, &cfg, err, sizeof(err)), -EADDRINUSE);
    CHECK(b == NULL);
    CHECK(strlen(err) > 0);
    CHECK(strstr(err, "127.0.0.1") != NULL);

    cfg.port = 0;
    static const char *const bad_addr[] = { "localhost", "1.2.3", "::g", "127.0.0.1:80" };
    for (size_t k = 0; k < sizeof(bad_addr) / sizeof(bad_addr[0]); k++) {
        cfg.bind = bad_addr[k];
        err[0] = 0;
        CHECK_EQ_INT(http_start(&b, &cfg, err, sizeof(err)), -EINVAL);
        CHECK(b == NULL && strlen(err) > 0);
    }
    /* an address this host does not have (unless it binds anything) */
    FILE *f = fopen("/proc/sys/net/ipv4/ip_nonlocal_bind", "r");
    int nonlocal = f && fgetc(f) == '1';
    if (f)
        fclose(f);
    if (!nonlocal) {
        cfg.bind = "192.0.2.1";
        CHECK_EQ_INT(http_start(&b, &cfg, err, sizeof(err)), -EADDRNOTAVAIL);
        CHECK(b == NULL);
    }
    cfg.bind = NULL;
    cfg.memory_limit = 100;
    CHECK_EQ_INT(http_start(&b, &cfg, err, sizeof(err)), -EINVAL);
    cfg.memory_limit = 0;

    /* IPv6 loopback, where the host has it */
    cfg.bind = "::1";
    int rc = http_start(&b, &cfg, err, sizeof(err));
    if (rc == 0) {
        CHECK(http_port(b) != 0);
        http_stop(b);
    } else {
        CHECK(rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT);
    }
    http_stop(a);
}

/* ---- strict requests: Host, header fields, a body on a GET ---------------- */

static void http_test_strict_body(const char *dir)
{
    http_t *h = http_test_start(dir, NULL);
    REQUIRE(h);
    uint16_t port = http_port(h);
    http_test_resp_t r;
    static const struct {
        const char *req;
        int status; /* -400: 400, or closed without an answer */
    } cases[] = {
        /* HTTP/1.1 requires Host (RFC 9112 3.2), and so does a later 1.x
         * (taken for 1.1); HTTP/1.0 does not */
        { "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.9\r\nConnection: close\r\n\r\n", 400 },
        { "HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.0\r\n\r\n", 200 },
        { "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n", 200 },
        /* a GET or HEAD with a body: 400 before the body is read */
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          "5\r\nhello\r\n0\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
        { "HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", 400 },
        /* a body that announces itself as empty is no body */
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
          200 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 00\r\nConnection: close\r\n\r\n",
          200 },
        /* a space in the request target, in the path or the query */
        { "GET /heal thz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz?a b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400 },
        { "GET /?  HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz?%20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200 },
        /* header fields: a space before the colon or in the name, a byte
         * that is no token character, a control character in the value,
         * two Hosts (RFC 9112 3.2, 5.1) */
        { "GET /healthz HTTP/1.1\r\nHost : x\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : v\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX A: v\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-\x80: v\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX(A): v\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x7f\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", 400 },
        { "GET /healthz HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400 },
        /* but a tab in a value, and every token character in a name */
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\nConnection: close\r\n\r\n", 200 },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX!#$%&'*+-.^_`|~09az: v\r\n"
          "Connection: close\r\n\r\n", 200 },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        CHECK(http_test_raw(port, cases[k].req, strlen(cases[k].req), &r) == 0);
        int want = cases[k].status;
        if (r.status != (want < 0 ? -want : want) && !(want < 0 && r.raw_len == 0))
            test_fail(__FILE__, __LINE__, "case %zu: status %d, want %d: %.60s", k, r.status,
                      want, r.raw ? r.raw : "");
        /* One whole answer, framed by its Content-Length (none after a
         * HEAD). libmicrohttpd 0.9.75's own 400 for a missing Host sent
         * its header block twice, the first block's length framing the
         * second (fuzz_http). */
        char v[64] = "";
        int head = strncmp(cases[k].req, "HEAD ", 5) == 0;
        if (r.status && (!http_test_header(&r, "Content-Length", v, sizeof(v)) ||
                         r.body_len != (head ? 0 : strtoul(v, NULL, 10))))
            test_fail(__FILE__, __LINE__, "case %zu: %zu body bytes, Content-Length %s: %.300s",
                      k, r.body_len, v, r.raw);
        http_test_resp_free(&r);
    }
    CHECK(http_test_get(port, "/healthz", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_test_resp_free(&r);
    http_stop(h);
}

TEST(http_strict_requests) { http_test_in_dir(http_test_strict_body); }

/* ---- per-address limit ---------------------------------------------------- */

/* A connection from src (an address of the loopback net), or -1. */
static int http_test_connect_from(uint16_t port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = { .sin_family = AF_INET };
    inet_pton(AF_INET, src, &a.sin_addr);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* With per_ip_limit, one address holding its share gets further connections
 * closed at once, and another address is served meanwhile. */
static void http_test_per_ip_body(const char *dir)
{
    http_cfg_t cfg = { .snapshot_dir = dir, .max_connections = 8, .per_ip_limit = 2 };
    char err[256];
    http_t *h = NULL;
    REQUIRE(http_start(&h, &cfg, err, sizeof(err)) == 0);
    uint16_t port = http_port(h);
    static const char part[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    int held[2];
    for (int k = 0; k < 2; k++) {
        held[k] = http_test_connect_from(port, "127.0.0.1");
        REQUIRE(held[k] >= 0);
        CHECK(send(held[k], part, sizeof(part) - 1, MSG_NOSIGNAL) > 0);
    }
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    /* a third from the same address: closed without an answer */
    int third = http_test_connect_from(port, "127.0.0.1");
    REQUIRE(third >= 0);
    double t0 = test_now();
    char buf[256];
    ssize_t n = recv(third, buf, sizeof(buf), 0);
    /* Refused at once; the bound is loose for busy or sanitized runs. */
    CHECK(n <= 0 && test_now() - t0 < 6.0);
    close(third);
    /* another address: served */
    int other = http_test_connect_from(port, "127.0.0.2");
    if (other < 0) {
        printf("    no 127.0.0.2 here: the other address is not tried\n");
    } else {
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        CHECK(send(other, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
        n = recv(other, buf, sizeof(buf) - 1, 0);
        CHECK(n > 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0);
        close(other);
    }
    for (int k = 0; k < 2; k++)
        close(held[k]);
    http_stop(h);
}

TEST(http_per_ip_limit) { http_test_in_dir(http_test_per_ip_body); }

/* ---- slow clients: the header deadline ------------------------------------ */

static int http_test_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { 30, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends one byte; 1 while the server keeps the connection open, 0 once it
 * closed it (end of stream, reset, or a refused send). */
static int http_test_trickle(int fd)
{
    if (send(fd, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN)
        return 0;
    char b[256];
    ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

typedef struct {
    uint16_t port;
    int status;
    double seconds;
} http_test_timed_t;

static void *http_test_timed_get(void *arg)
{
    http_test_timed_t *t = arg;
    double t0 = test_now();
    http_test_resp_t r;
    if (http_test_get(t->port, "/healthz", "", &r) == 0)
        t->status = r.status;
    http_test_resp_free(&r);
    t->seconds = test_now() - t0;
    return NULL;
}

#define HTTP_TEST_SLOW_CONNS 3

static void http_test_slow_body(const char *dir)
{
    /* 2 connections, a header deadline of 2 s, before the idle timeout (so
     * that the reaper, not libmicrohttpd, closes an idle connection) */
    http_cfg_t cfg = { .snapshot_dir = dir, .max_connections = 2, .timeout_s = 4,
                       .header_deadline_s = 2 };
    char err[256];
    http_t *h = NULL;
    REQUIRE(http_start(&h, &cfg, err, sizeof(err)) == 0);
    uint16_t port = http_port(h);

    /* More trickling clients than connections: each sends a request line
     * and then a header byte every 100 ms, never the end of the headers. */
    int fd[HTTP_TEST_SLOW_CONNS];
    double opened = test_now(), closed[HTTP_TEST_SLOW_CONNS];
    static const char line[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (int k = 0; k < HTTP_TEST_SLOW_CONNS; k++) {
        fd[k] = http_test_connect(port);
        REQUIRE(fd[k] >= 0);
        CHECK(send(fd[k], line, sizeof(line) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(line) - 1));
        closed[k] = 0;
    }
    /* A normal client meanwhile: it waits for a free slot, which the
     * deadline makes within about 2 s. */
    http_test_timed_t t = { .port = port };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, http_test_timed_get, &t) == 0);
    int open = HTTP_TEST_SLOW_CONNS;
    while (open && test_now() - opened < 10) {
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        for (int k = 0; k < HTTP_TEST_SLOW_CONNS; k++)
            if (!closed[k] && !http_test_trickle(fd[k])) {
                closed[k] = test_now() - opened;
                open--;
            }
    }
    pthread_join(th, NULL);
    for (int k = 0; k < HTTP_TEST_SLOW_CONNS; k++) {
        close(fd[k]);
        /* two at 2 s; the third, accepted then, 2 s later (the upper
         * bound only says "closed by the deadline", with room for a busy
         * or sanitized run; never closed reads 0) */
        if (closed[k] < 1.8 || closed[k] > 9.5)
            test_fail(__FILE__, __LINE__, "slow connection %d closed after %.2f s", k, closed[k]);
    }
    CHECK_EQ_INT(t.status, 200);
    if (t.seconds > 9.0)
        test_fail(__FILE__, __LINE__, "a normal request took %.2f s", t.seconds);

    http_stats_t st;
    http_stats(h, &st);
    CHECK_EQ_INT(st.cut_headers, HTTP_TEST_SLOW_CONNS);
    CHECK_EQ_INT(st.cut_idle, 0);

    /* Two kept-alive connections: the next request's deadline starts when
     * the last one ends. One trickles its next request; the other sends
     * nothing more, a routine idle close, counted apart. */
    int k = http_test_connect(port), idle = http_test_connect(port);
    REQUIRE(k >= 0 && idle >= 0);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[512];
    CHECK(send(k, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
    ssize_t n = recv(k, buf, sizeof(buf) - 1, 0);
    CHECK(n > 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0);
    CHECK(send(idle, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
    n = recv(idle, buf, sizeof(buf) - 1, 0);
    CHECK(n > 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0);
    double t0 = test_now();
    CHECK(send(k, line, sizeof(line) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(line) - 1));
    double gone = 0, idle_gone = 0;
    while ((!gone || !idle_gone) && test_now() - t0 < 10) {
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        if (!gone && !http_test_trickle(k))
            gone = test_now() - t0;
        if (!idle_gone && recv(idle, buf, sizeof(buf), MSG_DONTWAIT) == 0)
            idle_gone = test_now() - t0;
    }
    close(k);
    close(idle);
    if (gone < 1.8 || gone > 8.0)
        test_fail(__FILE__, __LINE__, "kept-alive slow request closed after %.2f s", gone);
    if (idle_gone < 1.8 || idle_gone > 8.0)
        test_fail(__FILE__, __LINE__, "idle kept-alive connection closed after %.2f s",
                  idle_gone);
    http_stats(h, &st);
    CHECK_EQ_INT(st.cut_headers, HTTP_TEST_SLOW_CONNS + 1);
    CHECK_EQ_INT(st.cut_idle, 1);

    http_stop(h);
}

TEST(http_slow_headers_closed) { http_test_in_dir(http_test_slow_body); }

/* A download that takes longer than the header deadline (read slowly, never
 * idle for the timeout) is not cut: the deadline is for the headers only. */
static void http_test_slow_download_body(const char *dir)
{
    http_cfg_t cfg = { .snapshot_dir = dir, .timeout_s = 2 };
    char err[256];
    http_t *h = NULL;
    REQUIRE(http_start(&h, &cfg, err, sizeof(err)) == 0);
    uint16_t port = http_port(h);
    const size_t size = 8u << 20;
    REQUIRE(http_test_write(dir, 3, size) == 0);
    REQUIRE(http_test_latest_v(dir, 3) == 0);
    int fd = http_test_connect(port);
    REQUIRE(fd >= 0);
    int rcvbuf = 256 << 10; /* not so small that delayed ACKs set the pace */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    static const char req[] = "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
    double t0 = test_now();
    size_t got = 0;
    char *buf = malloc(1 << 20);
    REQUIRE(buf);
    for (;;) {
        /* about 2 MiB a second: some 4 s for the file */
        ssize_t n = recv(fd, buf, 1 << 20, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        struct timespec ts = { 0, (long)((double)n / (2 << 20) * 1e9) };
        nanosleep(&ts, NULL);
    }
    double took = test_now() - t0;
    free(buf);
    close(fd);
    CHECK(got > size); /* the headers and the whole file */
    if (took < 2.5)
        test_fail(__FILE__, __LINE__, "the download took only %.2f s: not slow enough", took);
    http_stop(h);
}

TEST(http_slow_download_not_cut) { http_test_in_dir(http_test_slow_download_body); }

/* A response read too slowly (though never idle for the timeout, so
 * libmicrohttpd alone would serve it to the end) is reset once it is past
 * min(10, timeout_s) s plus its size at min_rate_kibps; the same response
 * read at full speed is not. The file is far larger than what the two
 * kernels buffer, so the server is still sending it at the deadline. */
#define HTTP_TEST_HUGE (32u << 20)

/* Reads fd to its end, at about rate bytes a second (0: as fast as it
 * comes), adding to *got; returns 1 when the end was a reset, 0 when not,
 * -1 (a failed test) without memory. */
static int http_test_read_all(int fd, double rate, size_t *got)
{
    char *buf = malloc(256 << 10);
    if (!buf) {
        test_fail(__FILE__, __LINE__, "out of memory");
        return -1;
    }
    int reset = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, 256 << 10, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            reset = n < 0 && errno == ECONNRESET;
            break;
        }
        *got += (size_t)n;
        if (rate > 0) {
            struct timespec ts = { 0, (long)((double)n / rate * 1e9) };
            nanosleep(&ts, NULL);
        }
    }
    free(buf);
    return reset;
}

static void http_test_slow_reader_body(const char *dir)
{
    /* 2 s + 32 MiB at 8 MiB/s: 6 s to send it */
    http_cfg_t cfg = { .snapshot_dir = dir, .timeout_s = 2, .min_rate_kibps = 8192 };
    char err[256];
    http_t *h = NULL;
    REQUIRE(http_start(&h, &cfg, err, sizeof(err)) == 0);
    uint16_t port = http_port(h);
    REQUIRE(http_test_write(dir, 5, HTTP_TEST_HUGE) == 0);
    REQUIRE(http_test_latest_v(dir, 5) == 0);

    http_test_resp_t r;
    CHECK(http_test_get(port, "/v1/snapshot", "", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body_len == HTTP_TEST_HUGE && http_test_is_version(5, r.body, r.body_len));
    http_test_resp_free(&r);

    int fd = http_test_connect(port);
    REQUIRE(fd >= 0);
    int rcvbuf = 256 << 10;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    static const char req[] = "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
    double t0 = test_now();
    size_t got = 0;
    /* about 2 MiB a second, a quarter of the rate: some 16 s for the file,
     * never 2 s without a read */
    int reset = http_test_read_all(fd, 2 << 20, &got);
    double took = test_now() - t0;
    close(fd);
    if (got >= HTTP_TEST_HUGE)
        test_fail(__FILE__, __LINE__, "the slow reader got all %zu bytes in %.2f s", got, took);
    CHECK(reset);
    /* cut at about 6 s: never before; the upper bound only says "cut by
     * the deadline", with room for a busy or sanitized run */
    if (took < 5.5 || took > 40.0)
        test_fail(__FILE__, __LINE__, "the slow reader was cut after %.2f s", took);
    http_stats_t st;
    http_stats(h, &st);
    CHECK(st.cut_rate == 1);

    /* A reader that stops reading: the 2 s idle timeout ends the response,
     * with a reset too, not with a close behind which the kernel would go
     * on sending all it holds of the file. */
    fd = http_test_connect(port);
    REQUIRE(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    CHECK(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
    struct timespec idle = { 4, 0 };
    nanosleep(&idle, NULL);
    got = 0;
    CHECK(http_test_read_all(fd, 0, &got) == 1);
    close(fd);
    CHECK(got < HTTP_TEST_HUGE);
    http_stop(h);
}

TEST(http_slow_reader_reset) { http_test_in_dir(http_test_slow_reader_body); }

/* ---- downloads while latest is replaced ----------------------------------- */

#define HTTP_TEST_BIG (4u << 20)
#define HTTP_TEST_READERS 32
#define HTTP_TEST_REPLACEMENTS 50

typedef struct {
    const char *dir;
    uint16_t port;
    atomic_int writer_done;
    atomic_int bad;           /* downloads that were not one whole version */
    atomic_int downloads;
    atomic_uint_fast64_t seen; /* bit v: version v was downloaded */
    char why[256];            /* the first problem */
    pthread_mutex_t mu;
} http_test_race_t;

static void http_test_race_fail(http_test_race_t *x, const char *fmt, int a, int b)
{
    pthread_mutex_lock(&x->mu);
    if (!x->why[0])
        snprintf(x->why, sizeof(x->why), fmt, a, b);
    pthread_mutex_unlock(&x->mu);
    atomic_fetch_add(&x->bad, 1);
}

static void *http_test_reader(void *arg)
{
    http_test_race_t *x = arg;
    int last = 0;
    while (!last) {
        last = atomic_load(&x->writer_done);
        http_test_resp_t r;
        char v[64];
        if (http_test_get(x->port, "/v1/snapshot", "", &r) != 0) {
            http_test_race_fail(x, "cannot connect (%d %d)", errno, 0);
            break;
        }
        atomic_fetch_add(&x->downloads, 1);
        uint64_t ver = 0;
        if (r.status != 200)
            http_test_race_fail(x, "status %d (%d)", r.status, 0);
        else if (!http_test_header(&r, "ETag", v, sizeof(v)) || v[0] != '"' ||
                 (ver = strtoull(v + 1, NULL, 10)) == 0 || ver > 63)
            http_test_race_fail(x, "no usable ETag (%d %d)", 0, 0);
        else if (r.body_len != HTTP_TEST_BIG)
            http_test_race_fail(x, "version %d: %d bytes", (int)ver, (int)r.body_len);
        else if (!http_test_is_version(ver, r.body, r.body_len))
            http_test_race_fail(x, "version %d: the body is not that version (%d)", (int)ver, 0);
        else
            atomic_fetch_or(&x->seen, (uint_fast64_t)1 << ver);
        http_test_resp_free(&r);
    }
    return NULL;
}

static void http_test_race_body(const char *dir)
{
    http_cfg_t cfg = { .snapshot_dir = dir };
    char err[256];
    http_t *h = NULL;
    REQUIRE(http_start(&h, &cfg, err, sizeof(err)) == 0);
    REQUIRE(http_test_write(dir, 1, HTTP_TEST_BIG) == 0);
    REQUIRE(http_test_latest_v(dir, 1) == 0);

    http_test_race_t x;
    memset(&x, 0, sizeof(x));
    x.dir = dir;
    x.port = http_port(h);
    atomic_init(&x.writer_done, 0);
    atomic_init(&x.bad, 0);
    atomic_init(&x.downloads, 0);
    atomic_init(&x.seen, 0);
    pthread_mutex_init(&x.mu, NULL);
    pthread_t th[HTTP_TEST_READERS];
    int started = 0;
    for (; started < HTTP_TEST_READERS; started++)
        if (pthread_create(&th[started], NULL, http_test_reader, &x) != 0)
            break;
    CHECK_EQ_INT(started, HTTP_TEST_READERS);

    /* The publisher: a new file, latest moved by rename, the old file
     * deleted at once, so most downloads lose their file's name midway. */
    int writes_ok = 1;
    for (uint64_t ver = 2; ver < 2 + HTTP_TEST_REPLACEMENTS; ver++) {
        char old[512];
        if (http_test_write(dir, ver, HTTP_TEST_BIG) != 0 || http_test_latest_v(dir, ver) != 0) {
            writes_ok = 0;
            break;
        }
        http_test_name(old, sizeof(old), dir, ver - 1);
        if (unlink(old) != 0)
            writes_ok = 0;
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    atomic_store(&x.writer_done, 1);
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    CHECK(writes_ok);
    if (atomic_load(&x.bad))
        test_fail(__FILE__, __LINE__, "%d bad downloads, first: %s", atomic_load(&x.bad), x.why);
    int versions = __builtin_popcountll((unsigned long long)atomic_load(&x.seen));
    CHECK(atomic_load(&x.downloads) >= HTTP_TEST_READERS);
    CHECK(versions >= 2); /* the downloads did overlap the replacements */
    printf("    %d downloads of %d versions\n", atomic_load(&x.downloads), versions);

    http_stats_t st;
    http_stats(h, &st);
    CHECK_EQ_INT(st.status_2xx, (uint64_t)atomic_load(&x.downloads));
    CHECK_EQ_INT(st.bytes_sent, (uint64_t)atomic_load(&x.downloads) * HTTP_TEST_BIG);
    pthread_mutex_destroy(&x.mu);
    http_stop(h);
}

TEST_SLOW(http_download_while_replaced, 300) { http_test_in_dir(http_test_race_body); }
