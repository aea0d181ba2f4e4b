/*
 * Tests that go with the libFuzzer targets of tests/fuzz/: the from-memory
 * readers they drive (snapshot_open_mem, checkpoint_open_mem) agree with the
 * path-based ones, and every seed of tests/fuzz/corpus/ goes through its
 * parser with the outcome its name says (bad-* refused, the rest accepted),
 * so `make test` and `make asan` replay the corpus without clang. A crash
 * input a fuzzer finds is fixed in io/ and added here (or as a seed) as a
 * regression test. Seeds of the readers that take a path are read from
 * there (embfile) or cut into a scratch directory as fuzz_dataset does
 * (dataset). fuzz_http's seeds go to a server set up as fuzz_http's (its
 * token, snapshot versions and traps), sent as fuzz_http sends them.
 *
 * Run from the repository root (as make does): the corpus is read from
 * tests/fuzz/corpus/.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "daemon/http.h"
#include "daemon/options.h"
#include "io/buf.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/dataset.h"
#include "io/embfile.h"
#include "io/event.h"
#include "io/fsutil.h"
#include "io/log.h"
#include "io/snapshot.h"
#include "test.h"
#include "testutil.h"
#include "tests/httpwire.h"

#define FUZZREGRESS_CORPUS "tests/fuzz/corpus"

/* ---- from memory, as from a file --------------------------------------------- */

static void fuzzregress_snapshot_mem_in(const char *dir)
{
    float ue[2 * 3] = { 1, 2, 3, 4, 5, 6 }, ie[3 * 3] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    const char *uid[2] = { "u1", "" }, *iid[3] = { "a", "b", "c" };
    const uint16_t ulen[2] = { 2, 0 }, ilen[3] = { 1, 1, 1 };
    const snapshot_pos_t pos[1] = { { 2, 40 } };
    snapshot_desc_t d = { .version = 3, .created_ms = 1000, .dim = 3, .n_users = 2,
                          .n_items = 3, .user_emb = ue, .item_emb = ie, .user_ids = uid,
                          .user_id_len = ulen, .item_ids = iid, .item_id_len = ilen,
                          .topic = "t", .pos = pos, .n_pos = 1 };
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/s.dsnap", dir);
    REQUIRE(snapshot_write(path, &d, 3, err, sizeof(err)) == 0);
    unsigned char *f;
    size_t len;
    REQUIRE(fsutil_read_all(path, 1 << 20, &f, &len, err, sizeof(err)) == 0);

    snapshot_t *a = NULL, *b = NULL;
    CHECK_EQ_INT(snapshot_open(path, &a, err, sizeof(err)), 0);
    CHECK_EQ_INT(snapshot_open_mem("mem", f, len, &b, err, sizeof(err)), 0);
    if (a && b) {
        const snapshot_desc_t *da = snapshot_desc(a), *db = snapshot_desc(b);
        CHECK(da->version == db->version && da->created_ms == db->created_ms);
        CHECK(da->dim == db->dim && da->n_users == db->n_users && da->n_items == db->n_items);
        CHECK(da->n_pos == 1 && db->n_pos == 1 && db->pos[0].offset == 40);
        CHECK(strcmp(db->topic, "t") == 0);
        size_t pa, pb;
        const unsigned char *ra = snapshot__payload(a, &pa), *rb = snapshot__payload(b, &pb);
        CHECK(pa == pb && memcmp(ra, rb, pa) == 0);
        snapshot_size_t sa, sb;
        snapshot_size(a, &sa);
        snapshot_size(b, &sb);
        CHECK(sa.file_bytes == len && sb.file_bytes == len && sa.raw_bytes == sb.raw_bytes);
        CHECK_EQ_INT(snapshot_item_row(b, "c", 1), 2);
    }
    /* The data is not kept: the snapshot outlives it. */
    memset(f, 0, len);
    if (b)
        CHECK_EQ_INT(snapshot_user_row(b, "u1", 2), 0);
    snapshot_free(a);
    snapshot_free(b);
    free(f);

    /* Every truncation is refused, named as given, with no snapshot. */
    REQUIRE(fsutil_read_all(path, 1 << 20, &f, &len, err, sizeof(err)) == 0);
    for (size_t n = 0; n < len; n++) {
        b = (snapshot_t *)&b;
        int rc = snapshot_open_mem("mem", f, n, &b, err, sizeof(err));
        if (rc != -EBADMSG || b != NULL || strncmp(err, "mem: ", 5) != 0)
            test_fail(__FILE__, __LINE__, "%zu of %zu bytes: rc %d: %s", n, len, rc, err);
    }
    free(f);
}

TEST(fuzzregress_snapshot_open_mem_matches_file)
{
    test_in_tmpdir("fuzzregress", fuzzregress_snapshot_mem_in);
}

static void fuzzregress_checkpoint_mem_in(const char *dir)
{
    checkpoint_writer_t *w = checkpoint_writer_new();
    REQUIRE(w);
    buf_t *s1 = checkpoint_writer_section(w, CKPT_META), *s2 = checkpoint_writer_section(w, 77);
    REQUIRE(s1 && s2);
    buf_put(s1, "meta bytes", 10);
    buf_put_u64(s2, 0x0102030405060708ull);
    char err[512], path[512];
    REQUIRE(checkpoint_writer_commit(w, dir, 9, 1234, 0, err, sizeof(err)) == 0);
    checkpoint_writer_free(w);
    checkpoint_path(dir, 9, path, sizeof(path));
    unsigned char *f;
    size_t len;
    REQUIRE(fsutil_read_all(path, 1 << 20, &f, &len, err, sizeof(err)) == 0);

    checkpoint_t *ck = NULL;
    CHECK_EQ_INT(checkpoint_open_mem("mem", f, len, &ck, err, sizeof(err)), 0);
    memset(f, 0, len); /* copied, not kept */
    if (ck) {
        CHECK(checkpoint_seq(ck) == 9 && checkpoint_created_ms(ck) == 1234);
        const unsigned char *p;
        size_t n;
        CHECK_EQ_INT(checkpoint_section(ck, CKPT_META, &p, &n), 0);
        CHECK(n == 10 && memcmp(p, "meta bytes", 10) == 0);
        CHECK_EQ_INT(checkpoint_section(ck, 77, &p, &n), 0);
        CHECK(n == 8 && buf_load_u64(p) == 0x0102030405060708ull);
        CHECK_EQ_INT(checkpoint_section(ck, CKPT_USERS, &p, &n), -ENOENT);
    }
    checkpoint_free(ck);
    free(f);

    REQUIRE(fsutil_read_all(path, 1 << 20, &f, &len, err, sizeof(err)) == 0);
    for (size_t n = 0; n < len; n++) {
        ck = (checkpoint_t *)&ck;
        int rc = checkpoint_open_mem("mem", f, n, &ck, err, sizeof(err));
        if (rc != -EBADMSG || ck != NULL || strncmp(err, "mem: ", 5) != 0)
            test_fail(__FILE__, __LINE__, "%zu of %zu bytes: rc %d: %s", n, len, rc, err);
    }
    /* The empty input, with no bytes at all behind the pointer. */
    ck = (checkpoint_t *)&ck;
    CHECK_EQ_INT(checkpoint_open_mem("mem", NULL, 0, &ck, err, sizeof(err)), -EBADMSG);
    CHECK(ck == NULL);
    free(f);
}

TEST(fuzzregress_checkpoint_open_mem_matches_file)
{
    test_in_tmpdir("fuzzregress", fuzzregress_checkpoint_mem_in);
}

/* ---- dataset directories ----------------------------------------------------- */

/* fuzz_dataset's input form: train.tsv, valid.tsv, test.tsv, then
 * candidates.tsv, cut at each "##\n" (see tests/fuzz/fuzz_dataset.c); a file
 * with no part is empty. Returns 0 or -1. */
static int fuzzregress_dataset_write(const char *dir, const unsigned char *data, size_t len)
{
    static const char *const names[4] = { "train.tsv", "valid.tsv", "test.tsv",
                                          "candidates.tsv" };
    size_t at = 0;
    for (int k = 0; k < 4; k++) {
        const unsigned char *cut = k < 3 && at < len ? memmem(data + at, len - at, "##\n", 3)
                                                     : NULL;
        size_t n = cut ? (size_t)(cut - data) - at : len - at;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, names[k]);
        FILE *f = fopen(path, "wb");
        if (!f)
            return -1;
        size_t put = n ? fwrite(data + at, 1, n, f) : 0;
        if (fclose(f) != 0 || put != n)
            return -1;
        at = cut ? at + n + 3 : len;
    }
    return 0;
}

/* fuzz_dataset, its first minute: a 58-byte dataset naming user
 * 99,999,999 made dataset_load allocate and fill per-user tables of 2 GB
 * (valid, test and three candidates a user: 10 s, a libFuzzer timeout)
 * before it found valid.tsv empty. A valid dataset of that shape loaded,
 * after allocating 1.2 GB. User ids must be dense; the tables are now
 * bounded by the ids read, and a dataset past the bound is refused before
 * any table is allocated. */
static void fuzzregress_dataset_sparse_users_in(const char *dir)
{
    static const char *const sparse[] = {
        /* the fuzzer's input */
        "0\t1\n099999999\t3\n2\t4\n##\n##\n0\t4\n"
        "##\n0\t5\t6\t7\n1\t2\t6\t7\n3\t1\t2\t31\n",
        /* valid but for the sparse users (it loaded) */
        "99999999\t0\n##\n0\t1\n##\n0\t2\n##\n0\t3\n",
        /* the user only in candidates.tsv */
        "0\t0\n##\n0\t1\n##\n0\t2\n##\n0\t3\n5000000\t4\n",
    };
    char err[512];
    for (size_t k = 0; k < sizeof(sparse) / sizeof(sparse[0]); k++) {
        REQUIRE(fuzzregress_dataset_write(dir, (const unsigned char *)sparse[k],
                                          strlen(sparse[k])) == 0);
        dataset_t ds;
        err[0] = '\0';
        int rc = dataset_load(&ds, dir, err, sizeof(err));
        if (rc != -EBADMSG || strncmp(err, dir, strlen(dir)) != 0 ||
            !strstr(err, "user ids must be dense"))
            test_fail(__FILE__, __LINE__, "input %zu: rc %d: %s", k, rc, err);
        CHECK(ds.valid == NULL && ds.cands == NULL && ds.n_users == 0);
        if (rc == 0)
            dataset_close(&ds);
    }
    /* Gaps within the bound still load: user 200,000 of a few lines. */
    const char *gap = "0\t0\n200000\t1\n##\n0\t1\n##\n0\t2\n##\n0\t3\n";
    REQUIRE(fuzzregress_dataset_write(dir, (const unsigned char *)gap, strlen(gap)) == 0);
    dataset_t ds;
    int rc = dataset_load(&ds, dir, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "a gap within the bound: rc %d: %s", rc, err);
    if (rc == 0) {
        CHECK_EQ_INT(ds.n_users, 200001);
        CHECK_EQ_INT(ds.valid[200000], -1);
        dataset_close(&ds);
    }
}

TEST(fuzzregress_dataset_sparse_user_ids_refused)
{
    test_in_tmpdir("fuzzregress", fuzzregress_dataset_sparse_users_in);
}

/* ---- HTTP requests --------------------------------------------------------------- */

/* The server of tests/fuzz/fuzz_http.c: its token, versions 7 and 8
 * published (latest 8), "secret", version 10 a symlink to it, version 11 a
 * FIFO; started by the first seed, stopped after the corpus. */
#define FUZZREGRESS_HTTP_TOKEN "fuzz-t0ken-Q7"

static http_t *fuzzregress_http_server;
static char *fuzzregress_http_dir;

static int fuzzregress_http_text(void *ud, char **body, size_t *len)
{
    (void)ud;
    *body = strdup("fuzzregress\n");
    *len = 12;
    return *body ? 0 : -ENOMEM;
}

static int fuzzregress_http_start(char *err, size_t errlen)
{
    log_setup(LOG_LVL_ERR - 1, 0); /* the bad-* seeds provoke warnings on purpose */
    if (!(fuzzregress_http_dir = test_tmpdir_new("fuzzregress"))) {
        snprintf(err, errlen, "no scratch directory");
        return -EIO;
    }
    const char *dir = fuzzregress_http_dir;
    float ue[2 * 4] = { 1, 2, 3, 4, 5, 6, 7, 8 }, ie[3 * 4] = { 0 };
    const char *uid[2] = { "u1", "u2" }, *iid[3] = { "i1", "i2", "i3" };
    const uint16_t ulen[2] = { 2, 2 }, ilen[3] = { 2, 2, 2 };
    for (uint64_t v = 7; v <= 8; v++) {
        snapshot_desc_t d = { .version = v, .created_ms = 1000, .dim = 4, .n_users = 2,
                              .n_items = 3, .user_emb = ue, .item_emb = ie, .user_ids = uid,
                              .user_id_len = ulen, .item_ids = iid, .item_id_len = ilen,
                              .topic = "t" };
        int rc = snapshot_publish(dir, &d, 3, 2, err, errlen);
        if (rc < 0)
            return rc;
    }
    char secret[512], path[512];
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    FILE *f = fopen(secret, "w");
    if (!f || fputs("TOPSECRET", f) < 0 || fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write", secret);
        return -EIO;
    }
    snapshot_path(dir, 10, path, sizeof(path));
    int rc = symlink(secret, path) == 0 ? 0 : -errno;
    snapshot_path(dir, 11, path, sizeof(path));
    if (rc < 0 || mkfifo(path, 0600) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(rc < 0 ? -rc : errno));
        return -EIO;
    }
    http_cfg_t cfg = { .token = FUZZREGRESS_HTTP_TOKEN, .snapshot_dir = dir,
                       .metrics = fuzzregress_http_text, .status = fuzzregress_http_text };
    return http_start(&fuzzregress_http_server, &cfg, err, errlen);
}

static void fuzzregress_http_stop(void)
{
    http_stop(fuzzregress_http_server);
    fuzzregress_http_server = NULL;
    test_tmpdir_free(fuzzregress_http_dir);
    fuzzregress_http_dir = NULL;
}

/* Reads from fd into *buf until the server closes or, with head, until a
 * whole header block has come; at most 10 s. */
static void fuzzregress_http_read(int fd, char *buf, size_t cap, size_t *len, int head)
{
    for (int k = 0; k < 1000 && *len < cap; k++) {
        if (head && memmem(buf, *len, "\r\n\r\n", 4))
            return;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 10) == 0)
            continue;
        ssize_t n = recv(fd, buf + *len, cap - *len, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return;
        *len += (size_t)n;
    }
}


/* Waits until the server has read everything sent to sfd, its end (or has
 * closed it): only then does the end of the client's stream reach
 * libmicrohttpd for sure (see fuzz_http_wait_taken). */
static void fuzzregress_http_wait_taken(int sfd)
{
    int queued = 0;
    for (int k = 0; k < 5000 && sfd >= 0 && ioctl(sfd, SIOCINQ, &queued) == 0 && queued; k++)
        poll(NULL, 0, 1);
}

/* As fuzz_http sends a seed: at once, then the end of the stream; or, cut
 * at a line "##", the part before it, its answer, then the rest. Returns
 * 0 when every request got a 2xx or 304, -EBADMSG when any was refused (a
 * 4xx or 505) or none was answered, with the statuses in err. */
static int fuzzregress_http(const char *path, const unsigned char *data, size_t len, char *err,
                            size_t errlen)
{
    (void)path;
    int rc;
    if (!fuzzregress_http_server && (rc = fuzzregress_http_start(err, errlen)) < 0) {
        test_fail(__FILE__, __LINE__, "the server: %s", err);
        return -EIO;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons(http_port(fuzzregress_http_server)) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { 10, 0 };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -EIO;
    }
    size_t cap = 1 << 20, got = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    const unsigned char *cut = memmem(data, len, "\n##\n", 4);
    size_t first = cut ? (size_t)(cut - data) + 1 : len;
    int sfd = httpwire_server_end(fd, http_port(fuzzregress_http_server), 1000);
    send(fd, data, first, MSG_NOSIGNAL);
    if (cut) {
        if (memmem(data, first, "\n\r\n", 3) || memmem(data, first, "\n\n", 2))
            fuzzregress_http_read(fd, buf, cap, &got, 1);
        send(fd, data + first + 3, len - first - 3, MSG_NOSIGNAL);
    }
    fuzzregress_http_wait_taken(sfd);
    shutdown(fd, SHUT_WR);
    fuzzregress_http_read(fd, buf, cap, &got, 0);
    close(fd);
    buf[got] = 0;

    /* The statuses, response by response (no body after a 304 or a HEAD's
     * answer: the next status line follows at once). */
    int ok = 1, n = 0;
    size_t pos = 0, at = 0;
    err[0] = 0;
    while (pos + 12 <= got && memcmp(buf + pos, "HTTP/1.1 ", 9) == 0) {
        int status = atoi(buf + pos + 9);
        const char *end = memmem(buf + pos, got - pos, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t body = 0, hn = (size_t)(end + 4 - (buf + pos)), rest = got - pos - hn;
        const char *cl = memmem(buf + pos, hn, "\r\nContent-Length: ", 18);
        if (cl && status != 304 && status >= 200 && rest > 0 &&
            memcmp(buf + pos + hn, "HTTP/1.1 ", rest < 9 ? rest : 9) != 0)
            body = strtoul(cl + 18, NULL, 10);
        if (body > rest)
            body = rest;
        ok &= (status >= 200 && status < 300) || status == 304;
        n++;
        if (at < errlen)
            at += (size_t)snprintf(err + at, errlen - at, "%s%d", n > 1 ? " " : "status ", status);
        pos += hn + body;
    }
    free(buf);
    if (n == 0)
        snprintf(err, errlen, "no answer");
    return ok && n > 0 ? 0 : -EBADMSG;
}

/* ---- the seed corpus ------------------------------------------------------------- */

typedef struct {
    const char *target;
    /* Returns 0 when the parser accepts data (read from path), < 0 when it
     * refuses it. */
    int (*parse)(const char *path, const unsigned char *data, size_t len, char *err,
                 size_t errlen);
    const char *suffix; /* only files with this suffix; NULL: all */
} fuzzregress_target_t;

static int fuzzregress_event(const char *path, const unsigned char *data, size_t len,
                             char *err, size_t errlen)
{
    (void)path;
    event_t ev;
    return event_decode(data, len, &ev, err, errlen);
}

/* As fuzz_config: each setting through options_set, kafka.* left out. */
static int fuzzregress_config_cb(void *ud, const char *file, int line, const char *key,
                                 const char *value, char *err, size_t errlen)
{
    (void)file;
    (void)line;
    if (strncmp(key, "kafka.", 6) == 0)
        return 0;
    return options_set(ud, key, value, err, errlen);
}

static int fuzzregress_config(const char *path, const unsigned char *data, size_t len,
                              char *err, size_t errlen)
{
    (void)path;
    options_t o;
    if (options_init(&o) < 0)
        return -ENOMEM;
    int rc = config_parse("seed", (const char *)data, len, fuzzregress_config_cb, &o, err,
                          errlen);
    options_close(&o);
    return rc;
}

static int fuzzregress_snapshot(const char *path, const unsigned char *data, size_t len,
                                char *err, size_t errlen)
{
    (void)path;
    snapshot_t *s;
    int rc = snapshot_open_mem("seed", data, len, &s, err, errlen);
    snapshot_free(s);
    return rc;
}

static int fuzzregress_checkpoint(const char *path, const unsigned char *data, size_t len,
                                  char *err, size_t errlen)
{
    (void)path;
    checkpoint_t *ck;
    int rc = checkpoint_open_mem("seed", data, len, &ck, err, errlen);
    checkpoint_free(ck);
    return rc;
}

static int fuzzregress_embfile(const char *path, const unsigned char *data, size_t len,
                               char *err, size_t errlen)
{
    (void)data;
    (void)len;
    embfile_t ef;
    int rc = embfile_read(path, &ef, err, errlen);
    if (rc == 0)
        free(ef.rows);
    return rc;
}

static int fuzzregress_dataset(const char *path, const unsigned char *data, size_t len,
                               char *err, size_t errlen)
{
    (void)path;
    char *dir = test_tmpdir_new("fuzzregress");
    if (!dir) {
        snprintf(err, errlen, "no scratch directory");
        return -EIO;
    }
    int rc = fuzzregress_dataset_write(dir, data, len);
    if (rc == 0) {
        dataset_t ds;
        rc = dataset_load(&ds, dir, err, errlen);
        if (rc == 0)
            dataset_close(&ds);
    } else {
        snprintf(err, errlen, "%s: cannot write the files", dir);
    }
    test_tmpdir_free(dir);
    return rc;
}

TEST(fuzzregress_seed_corpus_outcomes)
{
    static const fuzzregress_target_t targets[] = {
        { "event", fuzzregress_event, NULL },
        { "config", fuzzregress_config, NULL },
        { "snapshot", fuzzregress_snapshot, ".dsnap" }, /* recipe-* are not files */
        { "checkpoint", fuzzregress_checkpoint, NULL },
        { "embfile", fuzzregress_embfile, NULL },
        { "dataset", fuzzregress_dataset, NULL },
        { "http", fuzzregress_http, NULL },
    };
    for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
        char dirpath[512];
        snprintf(dirpath, sizeof(dirpath), "%s/%s", FUZZREGRESS_CORPUS, targets[t].target);
        DIR *d = opendir(dirpath);
        if (!d) {
            test_fail(__FILE__, __LINE__, "%s: %s (run from the repository root)", dirpath,
                      strerror(errno));
            continue;
        }
        int seen = 0, bad = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            const char *name = e->d_name, *sfx = targets[t].suffix;
            size_t nl = strlen(name);
            if (name[0] == '.' ||
                (sfx && (nl < strlen(sfx) || strcmp(name + nl - strlen(sfx), sfx) != 0)))
                continue;
            char path[1024], err[512] = "";
            snprintf(path, sizeof(path), "%s/%s", dirpath, name);
            unsigned char *data;
            size_t len;
            if (fsutil_read_all(path, 1 << 20, &data, &len, err, sizeof(err)) < 0) {
                test_fail(__FILE__, __LINE__, "%s", err);
                continue;
            }
            int want_bad = strncmp(name, "bad-", 4) == 0;
            int rc = targets[t].parse(path, data, len, err, sizeof(err));
            if (want_bad ? rc >= 0 : rc != 0)
                test_fail(__FILE__, __LINE__, "%s: %s, want %s (%s)", path,
                          rc ? "refused" : "accepted", want_bad ? "refused" : "accepted", err);
            seen++;
            bad += want_bad;
            free(data);
        }
        closedir(d);
        if (seen < 3 || bad == 0 || bad == seen)
            test_fail(__FILE__, __LINE__, "%s: %d seeds, %d of them bad: want both kinds",
                      dirpath, seen, bad);
    }
    fuzzregress_http_stop();
}
