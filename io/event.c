/* The event codec; see event.h. jansson is confined to this file. */
#include "event.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

enum { EVENT__OK = 0, EVENT__BAD_UTF8, EVENT__CONTROL };

__attribute__((format(printf, 3, 4)))
static int event__fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EBADMSG;
}

static int event__blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t event_utf8_seq(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c == 0xe0)
        need = 2, lo = 0xa0;
    else if (c == 0xed)
        need = 2, hi = 0x9f;
    else if (c >= 0xe1 && c <= 0xef)
        need = 2;
    else if (c == 0xf0)
        need = 3, lo = 0x90;
    else if (c == 0xf4)
        need = 3, hi = 0x8f;
    else if (c >= 0xf1 && c <= 0xf3)
        need = 3;
    else
        return 0;
    if (n - 1 < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k <= need; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return need + 1;
}

/* Scans s for the first byte that is not strict UTF-8 (event_utf8_seq) or,
 * unless ctl_ok, is an ASCII control. Returns EVENT__OK or the kind, with
 * its offset in *at. */
static int event__scan(const unsigned char *s, size_t n, int ctl_ok, size_t *at)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c - 0x20u < 0x5fu) { /* printable ASCII, the common case */
            i++;
            continue;
        }
        if (c < 0x80) {
            if (!ctl_ok) {
                *at = i;
                return EVENT__CONTROL;
            }
            i++;
            continue;
        }
        size_t len = event_utf8_seq(s + i, n - i);
        if (!len) {
            *at = i;
            return EVENT__BAD_UTF8;
        }
        i += len;
    }
    return EVENT__OK;
}

int event_id_check(const char *field, const char *s, size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return event__fail(err, errlen, "%s: empty", field);
    if (n > EVENT_ID_MAX)
        return event__fail(err, errlen, "%s: id longer than %d bytes", field, EVENT_ID_MAX);
    size_t at = 0;
    switch (event__scan((const unsigned char *)s, n, 0, &at)) {
    case EVENT__BAD_UTF8:
        return event__fail(err, errlen, "%s: invalid UTF-8 at byte %zu", field, at);
    case EVENT__CONTROL:
        return event__fail(err, errlen, "%s: control character 0x%02x at byte %zu", field,
                           (unsigned char)s[at], at);
    }
    return 0;
}

/* Validates the id s[0..n) and copies it, NUL-terminated, into dst. */
static int event__id_set(const char *field, const char *s, size_t n, char *dst,
                         uint16_t *dst_len, char *err, size_t errlen)
{
    int rc = event_id_check(field, s, n, err, errlen);
    if (rc < 0)
        return rc;
    memcpy(dst, s, n);
    dst[n] = '\0';
    *dst_len = (uint16_t)n;
    return 0;
}

/* Writes the decimal text of v into out (at least 21 bytes); returns its length. */
static size_t event__dec(long long v, char *out)
{
    char tmp[24];
    size_t n = 0, len = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    return len;
}

/* ---- text ---------------------------------------------------------------- */

static int event__decode_ts_text(const char *s, size_t n, int64_t *ts, char *err,
                                 size_t errlen)
{
    if (n == 0)
        return event__fail(err, errlen, "ts: empty");
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - (unsigned)'0';
        if (d > 9)
            return event__fail(err, errlen, "ts: not a non-negative integer");
        if (v > (INT64_MAX - (int64_t)d) / 10)
            return event__fail(err, errlen, "ts: out of range");
        v = v * 10 + (int64_t)d;
    }
    *ts = v;
    return 0;
}

static int event__decode_text(const char *p, size_t n, event_t *ev, char *err, size_t errlen)
{
    if (n > 0 && p[n - 1] == '\n') {
        n--;
        if (n > 0 && p[n - 1] == '\r')
            n--;
    }
    const char *end = p + n;
    const char *t1 = memchr(p, '\t', n);
    const char *t2 = t1 ? memchr(t1 + 1, '\t', (size_t)(end - t1 - 1)) : NULL;
    const char *t3 = t2 ? memchr(t2 + 1, '\t', (size_t)(end - t2 - 1)) : NULL;
    if (!t1 || t3) {
        int fields = 1;
        for (const char *q = p; (q = memchr(q, '\t', (size_t)(end - q))) != NULL; q++)
            fields++;
        return event__fail(err, errlen, "text: %d field%s, want user<TAB>item[<TAB>ts]",
                           fields, fields == 1 ? "" : "s");
    }
    const char *item_end = t2 ? t2 : end;
    int rc = event__id_set("user", p, (size_t)(t1 - p), ev->user, &ev->user_len, err, errlen);
    if (rc == 0)
        rc = event__id_set("item", t1 + 1, (size_t)(item_end - t1 - 1), ev->item,
                           &ev->item_len, err, errlen);
    if (rc == 0 && t2) {
        rc = event__decode_ts_text(t2 + 1, (size_t)(end - t2 - 1), &ev->ts, err, errlen);
        ev->has_ts = rc == 0;
    }
    if (rc == 0)
        ev->op = EVENT_ADD;
    return rc;
}

/* ---- JSON ---------------------------------------------------------------- */

static const char *event__json_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

static int event__json_id(const char *field, const json_t *v, char *dst, uint16_t *dst_len,
                          char *err, size_t errlen)
{
    if (json_is_string(v))
        return event__id_set(field, json_string_value(v), json_string_length(v), dst,
                             dst_len, err, errlen);
    if (json_is_integer(v)) {
        *dst_len = (uint16_t)event__dec(json_integer_value(v), dst);
        dst[*dst_len] = '\0';
        return 0;
    }
    return event__fail(err, errlen, "%s: must be a string or integer, not %s", field,
                       event__json_type(v));
}

/* jansson's error text may quote input bytes ("near '...'"); the reason goes
 * to logs and a dead-letter topic, so keep it printable ASCII. */
static int event__json_error(const json_error_t *jerr, char *err, size_t errlen)
{
    if (json_error_code(jerr) == json_error_out_of_memory) {
        event__fail(err, errlen, "json: out of memory");
        return -ENOMEM;
    }
    char text[JSON_ERROR_TEXT_LENGTH];
    size_t n = strnlen(jerr->text, sizeof(text) - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)jerr->text[i];
        text[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    text[n] = '\0';
    switch (json_error_code(jerr)) {
    case json_error_invalid_utf8:
        return event__fail(err, errlen, "json: invalid UTF-8 at byte %d", jerr->position);
    case json_error_null_character:
        return event__fail(err, errlen, "json: \\u0000 in a string at byte %d", jerr->position);
    default:
        return event__fail(err, errlen, "json: %s at byte %d", text, jerr->position);
    }
}

static int event__decode_json(const char *p, size_t n, event_t *ev, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return event__json_error(&jerr, err, errlen);
    int rc = 0;
    if (!json_is_object(root)) { /* unreachable after the '{' test; kept for safety */
        rc = event__fail(err, errlen, "json: not an object");
        goto done;
    }
    const json_t *user = json_object_get(root, "user");
    if (!user) {
        rc = event__fail(err, errlen, "json: missing \"user\"");
        goto done;
    }
    rc = event__json_id("user", user, ev->user, &ev->user_len, err, errlen);
    if (rc < 0)
        goto done;
    const json_t *op = json_object_get(root, "op");
    ev->op = EVENT_ADD;
    if (op && !json_is_null(op)) {
        if (!json_is_string(op) || json_string_length(op) != 6 ||
            memcmp(json_string_value(op), "forget", 6) != 0) {
            rc = event__fail(err, errlen, "op: must be \"forget\" or absent");
            goto done;
        }
        ev->op = EVENT_FORGET;
    }
    if (ev->op == EVENT_ADD) {
        const json_t *item = json_object_get(root, "item");
        if (!item) {
            rc = event__fail(err, errlen, "json: missing \"item\"");
            goto done;
        }
        rc = event__json_id("item", item, ev->item, &ev->item_len, err, errlen);
        if (rc < 0)
            goto done;
    }
    const json_t *ts = json_object_get(root, "ts");
    if (ts && !json_is_null(ts)) {
        if (!json_is_integer(ts)) {
            rc = event__fail(err, errlen, "ts: must be an integer, not %s", event__json_type(ts));
            goto done;
        }
        if (json_integer_value(ts) < 0) {
            rc = event__fail(err, errlen, "ts: negative");
            goto done;
        }
        ev->ts = json_integer_value(ts);
        ev->has_ts = 1;
    }
done:
    json_decref(root);
    return rc;
}

/* The fast path for JSON events in their usual shape: one flat object whose
 * values are plain ASCII strings (no escapes) or small integers, keys plain
 * ASCII and distinct. It decodes those ~20x faster than jansson (see
 * bench/RESULTS.md, "Event codec") and returns 1. For anything else, and for
 * anything it would refuse, it returns 0 and jansson decides, so both paths
 * accept the same messages with the same result and every refusal keeps
 * jansson's reason (tests/test_event.c compares the two on every input). */
typedef struct {
    const char *s; /* string value, or the digits of an integer */
    size_t n;
    int is_int;
} event__fval_t;

static int event__fast_int(const char *p, size_t n, size_t *i, event__fval_t *v)
{
    size_t k = *i;
    if (k < n && p[k] == '-')
        return 0; /* negative ids and ts: rare, leave them to jansson */
    size_t start = k;
    while (k < n && p[k] >= '0' && p[k] <= '9')
        k++;
    size_t digits = k - start;
    if (digits == 0 || digits > 18 || (digits > 1 && p[start] == '0'))
        return 0;
    if (k < n && (p[k] == '.' || p[k] == 'e' || p[k] == 'E'))
        return 0;
    *v = (event__fval_t){ p + start, digits, 1 };
    *i = k;
    return 1;
}

/* A string of printable ASCII without escapes, starting after the quote. */
static int event__fast_str(const char *p, size_t n, size_t *i, const char **s, size_t *len)
{
    size_t k = *i, start = k;
    while (k < n) {
        unsigned char c = (unsigned char)p[k];
        if (c == '"') {
            *s = p + start;
            *len = k - start;
            *i = k + 1;
            return 1;
        }
        if (c == '\\' || c < 0x20 || c >= 0x7f)
            return 0;
        k++;
    }
    return 0;
}

static int64_t event__fast_i64(const event__fval_t *v)
{
    int64_t x = 0;
    for (size_t k = 0; k < v->n; k++)
        x = x * 10 + (v->s[k] - '0');
    return x;
}

static int event__decode_json_fast(const char *p, size_t n, event_t *ev)
{
    enum { MAX_KEYS = 8 };
    struct {
        const char *s;
        size_t n;
    } keys[MAX_KEYS];
    int n_keys = 0;
    event__fval_t user = { 0 }, item = { 0 }, ts = { 0 }, op = { 0 };
    int has_user = 0, has_item = 0, has_ts = 0, has_op = 0;
    size_t i = 0;
    while (i < n && event__blank((unsigned char)p[i]))
        i++;
    if (i == n || p[i++] != '{')
        return 0;
    for (;;) {
        while (i < n && event__blank((unsigned char)p[i]))
            i++;
        const char *key;
        size_t klen;
        if (i == n || p[i++] != '"' || !event__fast_str(p, n, &i, &key, &klen))
            return 0;
        for (int k = 0; k < n_keys; k++)
            if (keys[k].n == klen && memcmp(keys[k].s, key, klen) == 0)
                return 0; /* a duplicate key: jansson refuses it */
        if (n_keys == MAX_KEYS)
            return 0;
        keys[n_keys].s = key;
        keys[n_keys++].n = klen;
        while (i < n && event__blank((unsigned char)p[i]))
            i++;
        if (i == n || p[i++] != ':')
            return 0;
        while (i < n && event__blank((unsigned char)p[i]))
            i++;
        if (i == n)
            return 0;
        event__fval_t v;
        if (p[i] == '"') {
            i++;
            v.is_int = 0;
            if (!event__fast_str(p, n, &i, &v.s, &v.n))
                return 0;
        } else if (!event__fast_int(p, n, &i, &v)) {
            return 0; /* null, true, arrays, objects, reals, negatives */
        }
        if (klen == 4 && memcmp(key, "user", 4) == 0)
            user = v, has_user = 1;
        else if (klen == 4 && memcmp(key, "item", 4) == 0)
            item = v, has_item = 1;
        else if (klen == 2 && memcmp(key, "ts", 2) == 0)
            ts = v, has_ts = 1;
        else if (klen == 2 && memcmp(key, "op", 2) == 0)
            op = v, has_op = 1;
        while (i < n && event__blank((unsigned char)p[i]))
            i++;
        if (i == n)
            return 0;
        if (p[i] == ',') {
            i++;
            continue;
        }
        if (p[i++] != '}')
            return 0;
        break;
    }
    while (i < n && event__blank((unsigned char)p[i]))
        i++;
    if (i != n || !has_user)
        return 0;
    ev->op = EVENT_ADD;
    if (has_op) {
        if (op.is_int || op.n != 6 || memcmp(op.s, "forget", 6) != 0)
            return 0;
        ev->op = EVENT_FORGET;
    }
    if (has_ts && !ts.is_int)
        return 0;
    if (ev->op == EVENT_ADD && !has_item)
        return 0;
    /* Integers and printable ASCII pass the id checks but for length. */
    if (user.n == 0 || user.n > EVENT_ID_MAX ||
        (ev->op == EVENT_ADD && (item.n == 0 || item.n > EVENT_ID_MAX)))
        return 0;
    memcpy(ev->user, user.s, user.n);
    ev->user[user.n] = '\0';
    ev->user_len = (uint16_t)user.n;
    if (ev->op == EVENT_ADD) {
        memcpy(ev->item, item.s, item.n);
        ev->item[item.n] = '\0';
        ev->item_len = (uint16_t)item.n;
    }
    if (has_ts) {
        ev->ts = event__fast_i64(&ts);
        ev->has_ts = 1;
    }
    return 1;
}

int event__decode_json_jansson(const char *p, size_t n, event_t *ev, char *err, size_t errlen)
{
    ev->op = 0;
    ev->user_len = ev->item_len = 0;
    ev->user[0] = ev->item[0] = '\0';
    ev->has_ts = 0;
    ev->ts = 0;
    return event__decode_json(p, n, ev, err, errlen);
}

/* ---- decode -------------------------------------------------------------- */

/* Clears what a reader looks at; the id arrays are not wiped (hot path). */
static void event__clear(event_t *ev)
{
    ev->op = 0;
    ev->user_len = ev->item_len = 0;
    ev->user[0] = ev->item[0] = '\0';
    ev->has_ts = 0;
    ev->ts = 0;
}

int event_decode(const void *buf, size_t len, event_t *ev, char *err, size_t errlen)
{
    const char *p = buf;
    event__clear(ev);
    if (len > EVENT_MAX_BYTES)
        return event__fail(err, errlen, "message: %zu bytes, limit %d", len, EVENT_MAX_BYTES);
    size_t i = 0;
    while (i < len && event__blank((unsigned char)p[i]))
        i++;
    if (i == len)
        return event__fail(err, errlen, "empty message");
    int rc;
    if (p[i] != '{')
        rc = event__decode_text(p, len, ev, err, errlen);
    else if (event__decode_json_fast(p, len, ev))
        rc = 0;
    else {
        event__clear(ev); /* the fast path may have set some fields */
        rc = event__decode_json(p, len, ev, err, errlen);
    }
    if (rc < 0)
        event__clear(ev); /* a refused message may have filled some fields */
    return rc;
}

/* ---- encode -------------------------------------------------------------- */

/* An append-only writer that counts past cap, so overflow is one test at the end. */
typedef struct {
    char *buf;
    size_t cap, len;
} event__out_t;

static void event__put(event__out_t *o, const char *s, size_t n)
{
    if (o->len + n <= o->cap)
        memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static int event__out_end(event__out_t *o)
{
    if (o->len > o->cap)
        return -ENOSPC;
    if (o->len < o->cap)
        o->buf[o->len] = '\0';
    return (int)o->len;
}

/* Writes s[0..n) as a JSON string; s is valid UTF-8. Controls and DEL are
 * escaped so the output is safe in logs even for ids decode would refuse. */
static void event__put_json_str(event__out_t *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    event__put(o, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        event__put(o, s + run, i - run);
        run = i + 1;
        char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
        switch (c) {
        case '"': event__put(o, "\\\"", 2); break;
        case '\\': event__put(o, "\\\\", 2); break;
        case '\n': event__put(o, "\\n", 2); break;
        case '\r': event__put(o, "\\r", 2); break;
        case '\t': event__put(o, "\\t", 2); break;
        default: event__put(o, esc, 6); break;
        }
    }
    event__put(o, s + run, n - run);
    event__put(o, "\"", 1);
}

static int event__encodable(const event_t *ev)
{
    if (ev->op != EVENT_ADD && ev->op != EVENT_FORGET)
        return 0;
    return ev->user_len <= EVENT_ID_MAX && ev->item_len <= EVENT_ID_MAX;
}

int event_encode_json(const event_t *ev, char *buf, size_t cap)
{
    size_t at;
    if (!event__encodable(ev) ||
        event__scan((const unsigned char *)ev->user, ev->user_len, 1, &at) != EVENT__OK ||
        (ev->op == EVENT_ADD &&
         event__scan((const unsigned char *)ev->item, ev->item_len, 1, &at) != EVENT__OK))
        return -EINVAL;
    event__out_t o = { buf, cap, 0 };
    event__put(&o, "{\"user\":", 8);
    event__put_json_str(&o, ev->user, ev->user_len);
    if (ev->op == EVENT_ADD) {
        event__put(&o, ",\"item\":", 8);
        event__put_json_str(&o, ev->item, ev->item_len);
    } else {
        event__put(&o, ",\"op\":\"forget\"", 14);
    }
    if (ev->has_ts) {
        char num[24];
        event__put(&o, ",\"ts\":", 6);
        event__put(&o, num, event__dec(ev->ts, num));
    }
    event__put(&o, "}", 1);
    return event__out_end(&o);
}

int event_encode_text(const event_t *ev, char *buf, size_t cap)
{
    if (!event__encodable(ev) || ev->op != EVENT_ADD)
        return -EINVAL;
    /* A control character (TAB, LF above all) would break the framing. */
    for (size_t i = 0; i < ev->user_len; i++)
        if ((unsigned char)ev->user[i] < 0x20 || ev->user[i] == 0x7f)
            return -EINVAL;
    for (size_t i = 0; i < ev->item_len; i++)
        if ((unsigned char)ev->item[i] < 0x20 || ev->item[i] == 0x7f)
            return -EINVAL;
    /* The decoder must read the line back as text: refuse one whose first
     * non-blank byte is '{' or that is all blank (ids may hold spaces). */
    size_t i = 0, k = 0;
    while (i < ev->user_len && ev->user[i] == ' ')
        i++;
    if (i == ev->user_len) {
        while (k < ev->item_len && ev->item[k] == ' ')
            k++;
        if (k < ev->item_len ? ev->item[k] == '{' : !ev->has_ts)
            return -EINVAL;
    } else if (ev->user[i] == '{') {
        return -EINVAL;
    }
    event__out_t o = { buf, cap, 0 };
    event__put(&o, ev->user, ev->user_len);
    event__put(&o, "\t", 1);
    event__put(&o, ev->item, ev->item_len);
    if (ev->has_ts) {
        char num[24];
        event__put(&o, "\t", 1);
        event__put(&o, num, event__dec(ev->ts, num));
    }
    return event__out_end(&o);
}
