/*
 * derrd-replay: produce interaction events to a Kafka topic, for tests,
 * benchmarks and the demo.
 *
 * The valid events come from a user<TAB>item file or from a seeded synthetic
 * generator (uniform users, Zipf item popularity). Malformed messages and
 * duplicates can be mixed in at random positions, and the tool writes down
 * what a consumer should end up with (--expect-out) and what it should refuse
 * (--malformed-out). Run with --help for the options.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/event.h"
#include "io/fsutil.h"
#include "io/kafka.h"
#include "io/log.h"
#include "model/idmap.h"

#define EXIT_USAGE 2
#define REPLAY_FLUSH_MS 60000       /* wait for delivery reports at the end */
#define REPLAY_TOPIC_MS 30000       /* topic creation */
#define REPLAY_MAX_FILE (1ULL << 36)
#define REPLAY_SLICE_S 0.002        /* token bucket burst: 2 ms worth of events */
#define REPLAY_PROGRESS_S 0.25
#define REPLAY_PAYLOAD_CAP (2 * EVENT_MAX_BYTES + 64) /* oversize payloads too */

static const char *usage_text =
    "usage: derrd-replay --brokers HOST:PORT --topic T [source] [options]\n"
    "\n"
    "Produces interaction events to a Kafka topic, one event per message with\n"
    "the user id as the key (one user's events stay in order in one partition),\n"
    "optionally mixed with malformed messages and duplicates at random positions.\n"
    "\n"
    "Source (one of):\n"
    "  --data FILE          a TSV of user<TAB>item lines (a directory means\n"
    "                       DIR/train.tsv); ids are sent as strings, byte for byte\n"
    "  --synthetic N        N interactions: users uniform over --users, items drawn\n"
    "                       from a Zipf popularity over --items (ranks shuffled),\n"
    "                       decimal ids \"0\", \"1\", ...; the same for the same --seed\n"
    "  --users U            synthetic users (default 5000)\n"
    "  --items I            synthetic items (default 20000)\n"
    "  --zipf S             synthetic item popularity exponent (default 0.8;\n"
    "                       0 = uniform)\n"
    "  --seed N             random seed (default 1): the synthetic events, and the\n"
    "                       positions and contents of malformed messages and\n"
    "                       duplicates (separate streams: adding --malformed does not\n"
    "                       change the valid events)\n"
    "  --count N            stop after N events from the source (default all)\n"
    "\n"
    "Messages:\n"
    "  --format json|text   json (default): {\"user\":\"u\",\"item\":\"i\",\"ts\":MS};\n"
    "                       text: user<TAB>item<TAB>MS; MS is the wall clock at send\n"
    "  --rate N             messages per second, malformed and duplicates included,\n"
    "                       smoothed over 2 ms slices (default 0 = as fast as possible)\n"
    "  --malformed FRAC     add round(N*FRAC) malformed messages, N = valid events;\n"
    "                       kinds, in equal shares: bad JSON, missing item/user, wrong\n"
    "                       type, control character in an id, oversize (> 4096\n"
    "                       bytes), text with 4 or 5 fields, invalid UTF-8, empty or\n"
    "                       blank; each is checked to be refused by event_decode();\n"
    "                       malformed messages have no key\n"
    "  --duplicates FRAC    add round(N*FRAC) messages repeating an earlier valid\n"
    "                       (user, item) with the current ts\n"
    "  --forget FRAC        add round(N*FRAC) erasure events {\"user\":U,\"op\":\"forget\"}\n"
    "                       (JSON in either format) for users seen earlier; the\n"
    "                       pairs of U sent before it leave --expect-out\n"
    "\n"
    "Kafka:\n"
    "  --brokers HOST:PORT  bootstrap.servers\n"
    "  --topic T            the topic\n"
    "  --partitions P       create the topic first with P partitions (replication 1;\n"
    "                       an existing topic is left as it is; needs the admin\n"
    "                       API, which librdkafka's mock cluster lacks: there it\n"
    "                       fails after 30 s, use kafka_mock_topic_create instead)\n"
    "  --kafka KEY=VALUE    a librdkafka property (repeatable), e.g.\n"
    "                       --kafka linger.ms=20 --kafka compression.type=lz4;\n"
    "                       the producer defaults to acks=all, idempotence on\n"
    "\n"
    "Outputs:\n"
    "  --expect-out FILE    the distinct valid (user, item) pairs produced, as\n"
    "                       user<TAB>item lines sorted by bytes (LC_ALL=C sort -u)\n"
    "  --malformed-out FILE every malformed payload produced, one per line, escaped:\n"
    "                       '\\' as \\\\, newline as \\n, tab as \\t, any other byte\n"
    "                       below 0x20 or from 0x7f up as \\xhh (two lowercase hex\n"
    "                       digits), everything else as is; an empty payload is an\n"
    "                       empty line; lines sorted by bytes, repeats kept (LC_ALL=C\n"
    "                       sort)\n"
    "  --delivered-out FILE one line per message the broker acknowledged, in the\n"
    "                       order of the delivery reports: partition<TAB>offset<TAB>\n"
    "                       payload, escaped as --malformed-out (the format of\n"
    "                       kcheck dump, to find where an acknowledged message went)\n"
    "  --help               this text\n"
    "\n"
    "Progress: on a terminal, one updating line on stderr (sent, rate, delivered,\n"
    "failed); otherwise only a summary line at the end. After the last message the\n"
    "tool waits up to 60 s for every delivery report (messages still undelivered\n"
    "then count as failed) and prints one JSON line to stdout:\n"
    "  {\"produced\":N,\"valid\":V,\"malformed\":M,\"duplicates\":D,[\"forgets\":G,]\n"
    "   \"delivered\":X,\"failed\":F,\"seconds\":S,\"rate\":R}\n"
    "where produced = V + M + D + G (\"forgets\" only with --forget), S runs from\n"
    "the first send to the last delivery report and R = produced / S. SIGINT or\n"
    "SIGTERM stops producing, waits for the reports and writes the outputs for\n"
    "what was sent (a second one kills).\n"
    "\n"
    "Exit status: 0 when every message was delivered, 1 on delivery failures or\n"
    "an interruption, 2 on usage or input errors (TSV errors as file:line: reason).\n";

/* The client config lives as long as main; every exit path frees it. */
static kafka_config_t *replay_cfg;

static _Noreturn void replay_exit(int status)
{
    kafka_config_free(replay_cfg);
    exit(status);
}

static _Noreturn void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "derrd-replay: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see derrd-replay --help)\n");
    va_end(ap);
    replay_exit(EXIT_USAGE);
}

static _Noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "derrd-replay: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    replay_exit(status);
}

static long long parse_ll(const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die_usage("%s: '%s' is not an integer in [%lld, %lld]", opt, s, lo, hi);
    return v;
}

static double parse_double(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die_usage("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die(1, "out of memory");
    return p;
}

/* Grows the array *v of *cap elements of size elem to hold at least need,
 * doubling from first; dies when out of memory. */
static void xgrow(void *v, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : first;
    while (n < need)
        n *= 2;
    void *grown = realloc(*(void **)v, n * elem);
    if (!grown)
        die(1, "out of memory");
    *(void **)v = grown;
    *cap = n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- random numbers (splitmix64: small, seedable, plenty for test data) ---- */

typedef struct {
    uint64_t s;
} replay_rng_t;

static void replay_rng_init(replay_rng_t *r, uint64_t seed, uint64_t stream)
{
    r->s = seed * 0x9e3779b97f4a7c15ull ^ (stream + 1) * 0xd1b54a32d192ed03ull;
}

static uint64_t replay_rng_next(replay_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double replay_rng_unit(replay_rng_t *r)
{
    return (double)(replay_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n); n > 0. */
static uint64_t replay_rng_below(replay_rng_t *r, uint64_t n)
{
    uint64_t v = (uint64_t)(replay_rng_unit(r) * (double)n);
    return v < n ? v : n - 1;
}

enum { STREAM_SOURCE = 1, STREAM_MIX, STREAM_MALFORMED };

/* ---- the valid events ------------------------------------------------------ */

typedef struct {
    const char *user, *item; /* NUL-terminated */
} replay_pair_t;

typedef struct {
    replay_pair_t *v;
    size_t n, cap;
} replay_pairs_t;

static void replay_pairs_push(replay_pairs_t *ps, const char *user, const char *item)
{
    xgrow(&ps->v, &ps->cap, ps->n + 1, sizeof(*ps->v), 4096);
    ps->v[ps->n].user = user;
    ps->v[ps->n].item = item;
    ps->n++;
}

enum { FORMAT_JSON, FORMAT_TEXT };

/* Encodes an add event for (user, item, ts) in format; returns the length or
 * a negative errno (event_encode_*). */
static int replay_encode(int format, const char *user, size_t ulen, const char *item,
                         size_t ilen, int64_t ts, char *buf, size_t cap)
{
    static event_t ev; /* one thread; ~0.5 KB, not worth the stack each call */
    if (ulen > EVENT_ID_MAX || ilen > EVENT_ID_MAX)
        return -EINVAL;
    ev.op = EVENT_ADD;
    memcpy(ev.user, user, ulen);
    memcpy(ev.item, item, ilen);
    ev.user_len = (uint16_t)ulen;
    ev.item_len = (uint16_t)ilen;
    ev.has_ts = 1;
    ev.ts = ts;
    return format == FORMAT_JSON ? event_encode_json(&ev, buf, cap)
                                 : event_encode_text(&ev, buf, cap);
}

/* Printable ASCII without blanks: needs no check in either encoding (JSON
 * escapes '"' and '\'), except a text user id starting with '{'. */
static int replay_id_plain(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)s[k] <= 0x20 || (unsigned char)s[k] >= 0x7f)
            return 0;
    return 1;
}

/* Checks that (user, item) from path:line goes out as a valid event in
 * format and decodes back to the same ids; exits 2 with the reason if not. */
static void replay_check_ids(const char *path, long long line, int format, const char *user,
                             size_t ulen, const char *item, size_t ilen)
{
    const char *what[2] = { "user", "item" };
    size_t lens[2] = { ulen, ilen };
    for (int k = 0; k < 2; k++) {
        if (lens[k] == 0)
            die(EXIT_USAGE, "%s:%lld: empty %s id", path, line, what[k]);
        if (lens[k] > EVENT_ID_MAX)
            die(EXIT_USAGE, "%s:%lld: %s id longer than %d bytes", path, line, what[k],
                EVENT_ID_MAX);
    }
    if (replay_id_plain(user, ulen) && replay_id_plain(item, ilen) && user[0] != '{')
        return;
    char buf[EVENT_MAX_BYTES], err[128];
    int n = replay_encode(format, user, ulen, item, ilen, 0, buf, sizeof(buf));
    if (n < 0) {
        if (format == FORMAT_JSON) {
            /* JSON refuses only invalid UTF-8; the text decoder says where */
            static event_t tev;
            n = replay_encode(FORMAT_TEXT, user, ulen, item, ilen, 0, buf, sizeof(buf));
            if (n >= 0 && event_decode(buf, (size_t)n, &tev, err, sizeof(err)) < 0)
                die(EXIT_USAGE, "%s:%lld: %s", path, line, err);
            die(EXIT_USAGE, "%s:%lld: an id is not valid UTF-8", path, line);
        }
        /* the text encoder refuses control characters and a leading '{' */
        for (int k = 0; k < 2; k++) {
            const char *s = k ? item : user;
            for (size_t i = 0; i < lens[k]; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                    die(EXIT_USAGE, "%s:%lld: %s: control character 0x%02x at byte %zu", path,
                        line, what[k], (unsigned char)s[i], i);
        }
        die(EXIT_USAGE, "%s:%lld: cannot be sent as text (a user id starting with '{' reads "
            "as JSON); use --format json", path, line);
    }
    static event_t ev;
    if (event_decode(buf, (size_t)n, &ev, err, sizeof(err)) < 0)
        die(EXIT_USAGE, "%s:%lld: %s", path, line, err);
    if (ev.user_len != ulen || memcmp(ev.user, user, ulen) || ev.item_len != ilen ||
        memcmp(ev.item, item, ilen))
        die(EXIT_USAGE, "%s:%lld: the ids do not survive encoding and decoding", path, line);
}

/* Loads up to max lines of a user<TAB>item file (a directory: DIR/train.tsv)
 * as pairs pointing into *buf, which the caller frees. Exits 2 on any error. */
static void replay_tsv_load(const char *data, int64_t max, int format, char **path_out,
                            unsigned char **buf_out, replay_pairs_t *ps)
{
    struct stat st;
    if (stat(data, &st) < 0)
        die(EXIT_USAGE, "%s: %s", data, strerror(errno));
    size_t plen = strlen(data) + sizeof("/train.tsv");
    char *path = xmalloc(plen);
    snprintf(path, plen, S_ISDIR(st.st_mode) ? "%s/train.tsv" : "%s", data);
    unsigned char *buf;
    size_t len;
    char err[512];
    if (fsutil_read_all(path, REPLAY_MAX_FILE, &buf, &len, err, sizeof(err)) < 0)
        die(EXIT_USAGE, "%s", err);
    unsigned char *grown = realloc(buf, len + 1); /* room to end an unterminated last line */
    if (!grown)
        die(1, "out of memory");
    buf = grown;
    buf[len] = '\0';
    char *p = (char *)buf, *end = p + len;
    long long line = 0;
    while (p < end && (max < 0 || (int64_t)ps->n < max)) {
        line++;
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        char *stop = eol;
        if (stop > p && stop[-1] == '\r')
            stop--;
        if (stop == p)
            die(EXIT_USAGE, "%s:%lld: empty line, expected user<TAB>item", path, line);
        char *tab = memchr(p, '\t', (size_t)(stop - p));
        int fields = 1;
        for (char *q = p; (q = memchr(q, '\t', (size_t)(stop - q))) != NULL; q++)
            fields++;
        if (fields != 2)
            die(EXIT_USAGE, "%s:%lld: %d field%s, expected user<TAB>item", path, line, fields,
                fields == 1 ? "" : "s");
        if (memchr(p, '\0', (size_t)(stop - p)))
            die(EXIT_USAGE, "%s:%lld: NUL byte in an id", path, line);
        replay_check_ids(path, line, format, p, (size_t)(tab - p), tab + 1,
                         (size_t)(stop - tab - 1));
        *tab = '\0';
        *stop = '\0'; /* at most end, which has a byte to spare */
        replay_pairs_push(ps, p, tab + 1);
        p = eol + 1;
    }
    *path_out = path;
    *buf_out = buf;
}

/* Decimal ids "0".."n-1" in one block. */
static const char **replay_ids_make(uint32_t n, char **block)
{
    const char **ids = xmalloc((size_t)n * sizeof(*ids));
    char *b = *block = xmalloc((size_t)n * 11);
    for (uint32_t k = 0; k < n; k++) {
        ids[k] = b;
        b += snprintf(b, 11, "%u", k) + 1;
    }
    return ids;
}

typedef struct {
    replay_rng_t rng;
    uint32_t n_users, n_items;
    const char **users, **items;
    char *user_block, *item_block;
    double *cdf;     /* (n_items) cumulative Zipf weight by rank */
    uint32_t *perm;  /* (n_items) rank -> item */
} replay_synth_t;

static void replay_synth_init(replay_synth_t *s, uint64_t seed, uint32_t users, uint32_t items,
                              double zipf)
{
    replay_rng_init(&s->rng, seed, STREAM_SOURCE);
    s->n_users = users;
    s->n_items = items;
    s->users = replay_ids_make(users, &s->user_block);
    s->items = replay_ids_make(items, &s->item_block);
    s->cdf = xmalloc((size_t)items * sizeof(double));
    s->perm = xmalloc((size_t)items * sizeof(uint32_t));
    double acc = 0.0;
    for (uint32_t r = 0; r < items; r++) {
        acc += pow((double)r + 1.0, -zipf);
        s->cdf[r] = acc;
        s->perm[r] = r;
    }
    for (uint32_t r = items; r > 1; r--) { /* popularity is not id order */
        uint32_t j = (uint32_t)replay_rng_below(&s->rng, r);
        uint32_t t = s->perm[r - 1];
        s->perm[r - 1] = s->perm[j];
        s->perm[j] = t;
    }
}

static void replay_synth_next(replay_synth_t *s, const char **user, const char **item)
{
    *user = s->users[replay_rng_below(&s->rng, s->n_users)];
    double x = replay_rng_unit(&s->rng) * s->cdf[s->n_items - 1];
    uint32_t lo = 0, hi = s->n_items - 1; /* first rank with cdf > x */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->cdf[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    *item = s->items[s->perm[lo]];
}

static void replay_synth_close(replay_synth_t *s)
{
    free(s->users);
    free(s->items);
    free(s->user_block);
    free(s->item_block);
    free(s->cdf);
    free(s->perm);
}

/* ---- malformed messages ---------------------------------------------------- */

enum {
    BAD_JSON, BAD_MISSING, BAD_TYPE, BAD_CONTROL, BAD_OVERSIZE, BAD_FIELDS, BAD_UTF8,
    BAD_EMPTY, BAD_KINDS
};

typedef struct {
    char *p;
    size_t cap, len;
} replay_out_t;

static void replay_put(replay_out_t *o, const void *s, size_t n)
{
    if (o->len + n > o->cap)
        die(1, "internal error: malformed payload over %zu bytes", o->cap);
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

__attribute__((format(printf, 2, 3)))
static void replay_putf(replay_out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        die(1, "internal error: malformed payload over %zu bytes", o->cap);
    o->len += (size_t)n;
}

/* Writes one malformed payload of kind into buf; returns its length. It is
 * meant to be refused, which the caller checks. */
static size_t replay_malformed_make(replay_rng_t *r, int kind, char *buf, size_t cap)
{
    static const char *const bad_utf8[] = {
        "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "\xe2\x82",
        "\xf8\x88\x80\x80\x80", "\xc3",
    };
    replay_out_t o = { buf, cap, 0 };
    unsigned u = (unsigned)replay_rng_below(r, 100000), i = (unsigned)replay_rng_below(r, 100000);
    long long ts = 1700000000000LL + (long long)replay_rng_below(r, 1000000000);
    int v = (int)replay_rng_below(r, 6);
    switch (kind) {
    case BAD_JSON:
        switch (v) {
        case 0: /* truncated */
            replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",\"ts\":%lld}", u, i, ts);
            o.len = 1 + (size_t)replay_rng_below(r, o.len - 1);
            break;
        case 1: replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",}", u, i); break;
        case 2: replay_putf(&o, "{user:\"%u\",item:\"%u\"}", u, i); break;
        case 3: replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\"} {}", u, i); break;
        case 4: replay_putf(&o, "{\"user\":\"%u\",\"user\":\"%u\",\"item\":\"%u\"}", u, u + 1, i);
                break;
        default: replay_putf(&o, "{'user':'%u','item':'%u'}", u, i); break;
        }
        break;
    case BAD_MISSING:
        switch (v % 4) {
        case 0: replay_putf(&o, "{\"user\":\"%u\"}", u); break;
        case 1: replay_putf(&o, "{\"user\":\"%u\",\"ts\":%lld}", u, ts); break;
        case 2: replay_putf(&o, "{\"user\":\"%u\",\"Item\":\"%u\",\"ts\":%lld}", u, i, ts); break;
        default: replay_putf(&o, "{\"item\":\"%u\",\"ts\":%lld}", i, ts); break;
        }
        break;
    case BAD_TYPE:
        switch (replay_rng_below(r, 9)) {
        case 0: replay_putf(&o, "{\"user\":\"%u\",\"item\":[\"%u\"]}", u, i); break;
        case 1: replay_putf(&o, "{\"user\":\"%u\",\"item\":{\"id\":\"%u\"}}", u, i); break;
        case 2: replay_putf(&o, "{\"user\":\"%u\",\"item\":true}", u); break;
        case 3: replay_putf(&o, "{\"user\":\"%u\",\"item\":%u.5}", u, i); break;
        case 4: replay_putf(&o, "{\"user\":null,\"item\":\"%u\"}", i); break;
        case 5: replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",\"ts\":\"%lld\"}", u, i, ts);
                break;
        case 6: replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",\"ts\":-%lld}", u, i, ts); break;
        case 7: replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",\"ts\":%lld.25}", u, i, ts);
                break;
        default: replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",\"op\":\"delete\"}", u, i);
                 break;
        }
        break;
    case BAD_CONTROL: {
        /* any byte < 0x20 or 0x7f, except in text the framing bytes tab, LF, CR */
        unsigned c = (unsigned)replay_rng_below(r, 0x21);
        c = c == 0x20 ? 0x7f : c;
        int json = v < 3 || c == '\t' || c == '\n' || c == '\r' || c == 0;
        int in_item = v & 1;
        if (json)
            replay_putf(&o, in_item ? "{\"user\":\"%u\",\"item\":\"x%u\\u%04x\"}"
                                    : "{\"user\":\"%u\\u%04x\",\"item\":\"%u\"}",
                        u, in_item ? i : c, in_item ? c : i);
        else if (in_item)
            replay_putf(&o, "%u\t%u%c%u", u, i, (char)c, i);
        else
            replay_putf(&o, "%u%c%u\t%u", u, (char)c, u, i);
        break;
    }
    case BAD_OVERSIZE: {
        size_t want = EVENT_MAX_BYTES + 1 + (size_t)replay_rng_below(r, 2048);
        if (v < 4) {
            replay_putf(&o, "{\"user\":\"%u\",\"item\":\"%u\",\"ts\":%lld,\"pad\":\"", u, i, ts);
            while (o.len < want - 2)
                replay_put(&o, "x", 1);
            replay_put(&o, "\"}", 2);
        } else {
            replay_putf(&o, "%u\t", u);
            while (o.len < want)
                replay_put(&o, "y", 1);
        }
        break;
    }
    case BAD_FIELDS:
        if (v < 4)
            replay_putf(&o, "%u\t%u\t%lld\tclick", u, i, ts);
        else
            replay_putf(&o, "%u\t%u\t%lld\t1\t2", u, i, ts);
        break;
    case BAD_UTF8: {
        const char *b = bad_utf8[replay_rng_below(r, sizeof(bad_utf8) / sizeof(bad_utf8[0]))];
        switch (v % 3) {
        case 0: replay_putf(&o, "%u%s\t%u", u, b, i); break;
        case 1: replay_putf(&o, "%u\t%s%u\t%lld", u, b, i, ts); break;
        default: replay_putf(&o, "{\"user\":\"%u%s\",\"item\":\"%u\"}", u, b, i); break;
        }
        break;
    }
    default: { /* BAD_EMPTY: empty, or only blanks */
        static const char *const blank[] = { "", "", "", " ", "\n", "\r\n", " \t ", "\t" };
        const char *b = blank[replay_rng_below(r, sizeof(blank) / sizeof(blank[0]))];
        replay_put(&o, b, strlen(b));
        break;
    }
    }
    return o.len;
}

/* A malformed payload in buf that event_decode() refuses, of a random kind. */
static size_t replay_malformed_next(replay_rng_t *r, char *buf, size_t cap)
{
    static event_t ev;
    int kind = (int)replay_rng_below(r, BAD_KINDS);
    for (int attempt = 0; attempt < 1000; attempt++) {
        size_t n = replay_malformed_make(r, kind, buf, cap);
        if (event_decode(buf, n, &ev, NULL, 0) < 0)
            return n;
    }
    die(1, "internal error: malformed messages of kind %d keep decoding", kind);
}

/* Growing list of escaped lines (for --malformed-out). */
typedef struct {
    char *text;
    size_t len, cap;
    size_t *start;
    size_t n, ncap;
} replay_lines_t;

static void replay_lines_reserve(replay_lines_t *ls, size_t more)
{
    xgrow(&ls->text, &ls->cap, ls->len + more, 1, 65536);
}

/* Writes s escaped as --malformed-out describes into o (room for 4 * n + 1
 * bytes), NUL-terminated; returns the length without the NUL. */
static size_t replay_escape(char *o, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *start = o;
    for (size_t k = 0; k < n; k++) {
        unsigned c = s[k];
        if (c == '\\') {
            *o++ = '\\';
            *o++ = '\\';
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (c < 0x20 || c >= 0x7f) {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    return (size_t)(o - start);
}

static void replay_lines_add_escaped(replay_lines_t *ls, const unsigned char *s, size_t n)
{
    xgrow(&ls->start, &ls->ncap, ls->n + 1, sizeof(*ls->start), 1024);
    ls->start[ls->n++] = ls->len;
    replay_lines_reserve(ls, 4 * n + 1);
    ls->len += replay_escape(ls->text + ls->len, s, n) + 1;
}

static int replay_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Ids hold no byte below 0x20, so comparing user then item as C strings is
 * the byte order of the lines "user\titem". */
static int replay_cmp_pair(const void *a, const void *b)
{
    const replay_pair_t *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    return c ? c : strcmp(x->item, y->item);
}

static FILE *replay_open_out(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die(EXIT_USAGE, "%s: %s", path, strerror(errno));
    return f;
}

static void replay_close_out(FILE *f, const char *path)
{
    if (ferror(f) | (fclose(f) != 0))
        die(1, "%s: write failed: %s", path, strerror(errno));
}

static void replay_expect_write(FILE *f, const char *path, replay_pair_t *v, size_t n)
{
    if (n > 0) /* v may be NULL then */
        qsort(v, n, sizeof(*v), replay_cmp_pair);
    for (size_t k = 0; k < n; k++)
        if (k == 0 || replay_cmp_pair(&v[k - 1], &v[k]) != 0)
            fprintf(f, "%s\t%s\n", v[k].user, v[k].item);
    replay_close_out(f, path);
}

/* The pairs a consumer ends with when the log (adds and duplicates with an
 * item, forgets without) is applied in order: an add survives unless a
 * forget of its user comes after it. Walks the log backwards with the set of
 * users forgotten later. */
static void replay_expect_write_log(FILE *f, const char *path, replay_pairs_t *log)
{
    idmap_t *forgotten = idmap_new(1);
    replay_pairs_t keep = { 0 };
    if (!forgotten)
        die(1, "out of memory");
    for (size_t k = log->n; k-- > 0;) {
        const replay_pair_t *e = &log->v[k];
        size_t ulen = strlen(e->user);
        if (!e->item) {
            if (idmap_intern(forgotten, e->user, ulen, NULL) < 0)
                die(1, "out of memory");
        } else if (idmap_find(forgotten, e->user, ulen) < 0) {
            replay_pairs_push(&keep, e->user, e->item);
        }
    }
    idmap_free(forgotten);
    replay_expect_write(f, path, keep.v, keep.n);
    free(keep.v);
}

static void replay_malformed_write(FILE *f, const char *path, replay_lines_t *ls)
{
    const char **lines = xmalloc(ls->n * sizeof(*lines));
    for (size_t k = 0; k < ls->n; k++)
        lines[k] = ls->text + ls->start[k];
    if (ls->n > 0)
        qsort(lines, ls->n, sizeof(*lines), replay_cmp_str);
    for (size_t k = 0; k < ls->n; k++) {
        fputs(lines[k], f);
        fputc('\n', f);
    }
    free(lines);
    replay_close_out(f, path);
}

/* ---- producing ------------------------------------------------------------- */

typedef struct {
    uint64_t sent;        /* messages handed to the producer (or refused by it) */
    uint64_t total;       /* messages planned */
    uint64_t delivered, failed;
    uint64_t send_errors; /* refused at send: counted in failed */
    char first_error[256];
    double t0, last_print;
    int tty, line_shown;
    FILE *delivered_f;    /* --delivered-out, or NULL */
} replay_stats_t;

static void replay_on_delivery(void *ud, void *msg_opaque, const kafka_msg_t *m,
                               const char *error)
{
    (void)msg_opaque;
    replay_stats_t *st = ud;
    if (!error) {
        st->delivered++;
        if (st->delivered_f) {
            static char esc[4 * REPLAY_PAYLOAD_CAP + 1];
            size_t n = m->value_len < REPLAY_PAYLOAD_CAP ? m->value_len : REPLAY_PAYLOAD_CAP;
            replay_escape(esc, m->value, m->value ? n : 0);
            fprintf(st->delivered_f, "%" PRId32 "\t%" PRId64 "\t%s\n", m->partition, m->offset,
                    esc);
        }
        return;
    }
    if (st->failed++ == 0)
        snprintf(st->first_error, sizeof(st->first_error), "%s", error);
}

static void replay_progress(replay_stats_t *st, double now, int force)
{
    if (!st->tty || (!force && now - st->last_print < REPLAY_PROGRESS_S))
        return;
    st->last_print = now;
    double dt = now - st->t0;
    fprintf(stderr, "\r\033[Ksent %llu/%llu  %.0f msg/s  delivered %llu  failed %llu",
            (unsigned long long)st->sent, (unsigned long long)st->total,
            dt > 0 ? (double)st->sent / dt : 0.0, (unsigned long long)st->delivered,
            (unsigned long long)st->failed);
    st->line_shown = 1;
}

static volatile sig_atomic_t replay_stop;

static void replay_on_signal(int sig)
{
    (void)sig;
    replay_stop = 1;
}

/* Queues one message, polling while the local queue is full. */
static void replay_send(kafka_producer_t *p, replay_stats_t *st, const char *topic,
                        const char *key, size_t key_len, const char *value, size_t len)
{
    for (;;) {
        int rc = kafka_producer_send(p, topic, -1, key, key_len, value, len, NULL, 0, NULL);
        if (rc == 0)
            break;
        if (rc == -ENOBUFS) {
            kafka_producer_poll(p, 10);
            replay_progress(st, now_s(), 0);
            continue;
        }
        st->failed++;
        st->send_errors++;
        if (st->send_errors == 1)
            snprintf(st->first_error, sizeof(st->first_error), "send: %s", strerror(-rc));
        break;
    }
    st->sent++;
    if ((st->sent & 255) == 0) {
        kafka_producer_poll(p, 0);
        replay_progress(st, now_s(), 0);
    }
}

/* Token bucket: waits until one more message may go at rate per second. */
typedef struct {
    double rate, tokens, burst, last;
} replay_bucket_t;

static void replay_bucket_take(replay_bucket_t *b, kafka_producer_t *p, replay_stats_t *st)
{
    for (;;) {
        double now = now_s();
        b->tokens += (now - b->last) * b->rate;
        b->last = now;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        if (b->tokens >= 1.0 || replay_stop)
            break;
        double wait = (1.0 - b->tokens) / b->rate;
        if (wait >= 0.001) {
            kafka_producer_poll(p, wait > 0.01 ? 10 : (int)(wait * 1000.0));
        } else {
            struct timespec ts = { 0, (long)(wait * 1e9) };
            nanosleep(&ts, NULL);
        }
        replay_progress(st, now_s(), 0);
    }
    b->tokens -= 1.0;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL, *data = NULL, *format_name = "json";
    const char *expect_out = NULL, *malformed_out = NULL, *delivered_out = NULL;
    long long synthetic = -1, count = -1, seed = 1, users = 5000, items = 20000;
    long long partitions = 0;
    double rate = 0.0, malformed_frac = 0.0, dup_frac = 0.0, forget_frac = 0.0, zipf = 0.8;
    int have_synth_shape = 0;
    char err[512];
    kafka_config_t *cfg = replay_cfg = kafka_config_new();
    if (!cfg)
        die(1, "out of memory");
    enum {
        O_BROKERS = 256, O_TOPIC, O_DATA, O_SYNTH, O_USERS, O_ITEMS, O_ZIPF, O_SEED, O_COUNT,
        O_FORMAT, O_RATE, O_MALFORMED, O_DUPS, O_FORGET, O_PARTITIONS, O_KAFKA, O_EXPECT, O_MALOUT,
        O_DELIVERED, O_HELP
    };
    static const struct option opts[] = {
        { "brokers", required_argument, 0, O_BROKERS },
        { "topic", required_argument, 0, O_TOPIC },
        { "data", required_argument, 0, O_DATA },
        { "synthetic", required_argument, 0, O_SYNTH },
        { "users", required_argument, 0, O_USERS },
        { "items", required_argument, 0, O_ITEMS },
        { "zipf", required_argument, 0, O_ZIPF },
        { "seed", required_argument, 0, O_SEED },
        { "count", required_argument, 0, O_COUNT },
        { "format", required_argument, 0, O_FORMAT },
        { "rate", required_argument, 0, O_RATE },
        { "malformed", required_argument, 0, O_MALFORMED },
        { "duplicates", required_argument, 0, O_DUPS },
        { "forget", required_argument, 0, O_FORGET },
        { "partitions", required_argument, 0, O_PARTITIONS },
        { "kafka", required_argument, 0, O_KAFKA },
        { "expect-out", required_argument, 0, O_EXPECT },
        { "malformed-out", required_argument, 0, O_MALOUT },
        { "delivered-out", required_argument, 0, O_DELIVERED },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    int c;
    opterr = 0; /* die_usage() reports, in one line */
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case O_BROKERS: brokers = optarg; break;
        case O_TOPIC: topic = optarg; break;
        case O_DATA: data = optarg; break;
        case O_SYNTH: synthetic = parse_ll("--synthetic", optarg, 0, INT64_MAX / 4); break;
        case O_USERS: users = parse_ll("--users", optarg, 1, 1000000000); have_synth_shape = 1;
                      break;
        case O_ITEMS: items = parse_ll("--items", optarg, 1, 100000000); have_synth_shape = 1;
                      break;
        case O_ZIPF: zipf = parse_double("--zipf", optarg, 0, 10); have_synth_shape = 1; break;
        case O_SEED: seed = parse_ll("--seed", optarg, 0, INT64_MAX); break;
        case O_COUNT: count = parse_ll("--count", optarg, 0, INT64_MAX / 4); break;
        case O_FORMAT: format_name = optarg; break;
        case O_RATE: rate = parse_double("--rate", optarg, 0, 1e9); break;
        case O_MALFORMED: malformed_frac = parse_double("--malformed", optarg, 0, 100); break;
        case O_DUPS: dup_frac = parse_double("--duplicates", optarg, 0, 100); break;
        case O_FORGET: forget_frac = parse_double("--forget", optarg, 0, 100); break;
        case O_PARTITIONS: partitions = parse_ll("--partitions", optarg, 1, 100000); break;
        case O_KAFKA: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                die_usage("--kafka '%s': expected KEY=VALUE", optarg);
            *eq = '\0';
            if (kafka_config_set(cfg, optarg, eq + 1, err, sizeof(err)) < 0)
                die_usage("--kafka %s=%s: %s", optarg, eq + 1, err);
            *eq = '=';
            break;
        }
        case O_EXPECT: expect_out = optarg; break;
        case O_MALOUT: malformed_out = optarg; break;
        case O_DELIVERED: delivered_out = optarg; break;
        case O_HELP: fputs(usage_text, stdout); return 0;
        case ':': die_usage("option '%s' needs a value", argv[optind - 1]);
        default: die_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    if (brokers && kafka_config_set(cfg, "bootstrap.servers", brokers, err, sizeof(err)) < 0)
        die_usage("--brokers %s: %s", brokers, err);
    if (!kafka_config_get(cfg, "bootstrap.servers"))
        die_usage("--brokers HOST:PORT is required");
    if (!topic || !*topic)
        die_usage("--topic T is required");
    if (!data == (synthetic < 0))
        die_usage("give one source: --data FILE or --synthetic N");
    if (data && have_synth_shape)
        die_usage("--users, --items and --zipf go with --synthetic, not --data");
    int format;
    if (!strcmp(format_name, "json"))
        format = FORMAT_JSON;
    else if (!strcmp(format_name, "text"))
        format = FORMAT_TEXT;
    else
        die_usage("--format: '%s' is not json or text", format_name);
    FILE *expect_f = expect_out ? replay_open_out(expect_out) : NULL;
    FILE *malformed_f = malformed_out ? replay_open_out(malformed_out) : NULL;
    FILE *delivered_f = delivered_out ? replay_open_out(delivered_out) : NULL;

    /* The valid events: all of a file in memory (the pairs point into it), or
     * drawn on the fly and kept only when duplicates or --expect-out need them. */
    replay_pairs_t pairs = { 0 };
    unsigned char *file_buf = NULL;
    char *path = NULL;
    replay_synth_t synth = { 0 };
    uint64_t n_valid;
    int keep_pairs = 1;
    if (data) {
        replay_tsv_load(data, count, format, &path, &file_buf, &pairs);
        n_valid = pairs.n;
    } else {
        n_valid = (uint64_t)(count >= 0 && count < synthetic ? count : synthetic);
        replay_synth_init(&synth, (uint64_t)seed, (uint32_t)users, (uint32_t)items, zipf);
        keep_pairs = dup_frac > 0 || forget_frac > 0 || expect_out;
    }
    uint64_t n_malformed = (uint64_t)llround((double)n_valid * malformed_frac);
    uint64_t n_dups = (uint64_t)llround((double)n_valid * dup_frac);
    uint64_t n_forgets = (uint64_t)llround((double)n_valid * forget_frac);
    /* With forgets, --expect-out needs the order of every add and forget. */
    replay_pairs_t log = { 0 };
    int keep_log = n_forgets > 0 && expect_out;

    kafka_producer_t *p = NULL;
    replay_stats_t st = { 0 };
    st.total = n_valid + n_malformed + n_dups + n_forgets;
    st.tty = isatty(2);
    st.delivered_f = delivered_f;
    if (partitions > 0 && kafka_topic_create(cfg, topic, (int)partitions, REPLAY_TOPIC_MS, err,
                                             sizeof(err)) < 0)
        die(1, "%s", err);
    if (kafka_producer_new(&p, cfg, replay_on_delivery, &st, err, sizeof(err)) < 0)
        die(EXIT_USAGE, "%s", err);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = replay_on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second signal kills */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    replay_rng_t mix, bad;
    replay_rng_init(&mix, (uint64_t)seed, STREAM_MIX);
    replay_rng_init(&bad, (uint64_t)seed, STREAM_MALFORMED);
    replay_lines_t bad_lines = { 0 };
    replay_bucket_t bucket = { rate, 1.0, fmax(1.0, rate * REPLAY_SLICE_S), now_s() };
    static char payload[REPLAY_PAYLOAD_CAP];
    uint64_t left_valid = n_valid, left_bad = n_malformed, left_dup = n_dups;
    uint64_t left_forget = n_forgets, sent_forget = 0;
    uint64_t sent_valid = 0, sent_bad = 0, sent_dup = 0;
    st.t0 = now_s();
    while (left_valid + left_bad + left_dup + left_forget > 0 && !replay_stop) {
        /* Each remaining message is equally likely next: a uniform interleaving.
         * A duplicate needs an earlier valid event. */
        uint64_t w_dup = sent_valid ? left_dup : 0, w_forget = sent_valid ? left_forget : 0;
        uint64_t x = replay_rng_below(&mix, left_valid + left_bad + w_dup + w_forget);
        if (rate > 0)
            replay_bucket_take(&bucket, p, &st);
        if (replay_stop)
            break;
        if (x >= left_valid + left_bad + w_dup) { /* a forget of an earlier user */
            const char *user = pairs.v[replay_rng_below(&mix, sent_valid)].user;
            static event_t fev;
            size_t ulen = strlen(user);
            fev.op = EVENT_FORGET;
            memcpy(fev.user, user, ulen);
            fev.user_len = (uint16_t)ulen;
            fev.item_len = 0;
            fev.item[0] = '\0';
            fev.has_ts = 0;
            int n = event_encode_json(&fev, payload, sizeof(payload));
            if (n < 0)
                die(1, "internal error: cannot encode a forget of %s", user);
            replay_send(p, &st, topic, user, ulen, payload, (size_t)n);
            if (keep_log)
                replay_pairs_push(&log, user, NULL);
            left_forget--;
            sent_forget++;
        } else if (x < left_valid || x >= left_valid + left_bad) {
            int dup = x >= left_valid;
            const char *user, *item;
            if (dup) {
                replay_pair_t *pr = &pairs.v[replay_rng_below(&mix, sent_valid)];
                user = pr->user;
                item = pr->item;
            } else if (data) {
                user = pairs.v[sent_valid].user;
                item = pairs.v[sent_valid].item;
            } else {
                replay_synth_next(&synth, &user, &item);
                if (keep_pairs)
                    replay_pairs_push(&pairs, user, item);
            }
            size_t ulen = strlen(user);
            int n = replay_encode(format, user, ulen, item, strlen(item),
                                  (int64_t)log_wall_ms(), payload, sizeof(payload));
            if (n < 0) /* the file was checked at load, synthetic ids are digits */
                die(1, "internal error: cannot encode (%s, %s)", user, item);
            replay_send(p, &st, topic, user, ulen, payload, (size_t)n);
            if (keep_log)
                replay_pairs_push(&log, user, item);
            if (dup) {
                left_dup--;
                sent_dup++;
            } else {
                left_valid--;
                sent_valid++;
            }
        } else {
            size_t n = replay_malformed_next(&bad, payload, sizeof(payload));
            if (malformed_f)
                replay_lines_add_escaped(&bad_lines, (const unsigned char *)payload, n);
            replay_send(p, &st, topic, NULL, 0, payload, n);
            left_bad--;
            sent_bad++;
        }
    }

    /* Every delivery report, or 60 s. */
    double deadline = now_s() + REPLAY_FLUSH_MS / 1000.0;
    while (kafka_producer_outstanding(p) > 0 && now_s() < deadline) {
        kafka_producer_flush(p, 100);
        replay_progress(&st, now_s(), 0);
    }
    kafka_producer_poll(p, 0);
    double seconds = now_s() - st.t0;
    uint64_t produced = sent_valid + sent_bad + sent_dup + sent_forget;
    uint64_t undelivered = produced - st.delivered - st.failed;
    if (st.line_shown)
        fprintf(stderr, "\r\033[K");
    if (undelivered)
        fprintf(stderr, "derrd-replay: %llu messages not delivered within %d s\n",
                (unsigned long long)undelivered, REPLAY_FLUSH_MS / 1000);
    uint64_t failed = st.failed + undelivered, delivered = st.delivered;
    double msg_rate = seconds > 0 ? (double)produced / seconds : 0.0;
    if (replay_stop)
        fprintf(stderr, "derrd-replay: interrupted after %llu of %llu messages\n",
                (unsigned long long)produced, (unsigned long long)st.total);
    fprintf(stderr, "derrd-replay: %llu messages (%llu valid, %llu malformed, %llu duplicates) "
            "to %s in %.2f s, %.0f msg/s: %llu delivered, %llu failed%s%s\n",
            (unsigned long long)produced, (unsigned long long)sent_valid,
            (unsigned long long)sent_bad, (unsigned long long)sent_dup, topic, seconds, msg_rate,
            (unsigned long long)delivered, (unsigned long long)failed,
            st.first_error[0] ? "; first failure: " : "", st.first_error);
    char forgets[48] = "";
    if (n_forgets)
        snprintf(forgets, sizeof(forgets), "\"forgets\":%llu,", (unsigned long long)sent_forget);
    printf("{\"produced\":%llu,\"valid\":%llu,\"malformed\":%llu,\"duplicates\":%llu,"
           "%s\"delivered\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"rate\":%.1f}\n",
           (unsigned long long)produced, (unsigned long long)sent_valid,
           (unsigned long long)sent_bad, (unsigned long long)sent_dup, forgets,
           (unsigned long long)delivered, (unsigned long long)failed, seconds, msg_rate);
    fflush(stdout);

    /* What went out: the outputs describe the messages sent, delivered or not. */
    if (expect_f && keep_log)
        replay_expect_write_log(expect_f, expect_out, &log);
    else if (expect_f)
        replay_expect_write(expect_f, expect_out, pairs.v, (size_t)sent_valid);
    free(log.v);
    if (malformed_f)
        replay_malformed_write(malformed_f, malformed_out, &bad_lines);
    if (delivered_f)
        replay_close_out(delivered_f, delivered_out);

    kafka_producer_free(p);
    kafka_config_free(cfg);
    replay_synth_close(&synth);
    free(pairs.v);
    free(file_buf);
    free(path);
    free(bad_lines.text);
    free(bad_lines.start);
    return failed || replay_stop || delivered != produced ? 1 : 0;
}
