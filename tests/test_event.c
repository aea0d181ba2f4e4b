/*
 * Tests of io/event.c, the codec for Kafka event messages: good inputs of
 * both encodings, a table of refused inputs each with the reason it must
 * give, the id and message size limits at their edges, the encoders
 * (escaping, -ENOSPC at every cap, -EINVAL), a seeded encode -> decode round
 * trip over random UTF-8 ids, and 10,000 seeded random and mutated messages
 * that must each be accepted or refused with a reason, never crash.
 *
 * Every message is decoded from a heap copy of exactly its length, so that
 * AddressSanitizer sees any read past the end.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/event.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------- */

/* A string literal with its length, embedded NULs included. */
#define EVT_LIT(s) s, sizeof(s) - 1

/* Decodes a heap copy of in[0..len) of exactly len bytes. */
static int event_test_decode(const void *in, size_t len, event_t *ev, char *err, size_t errlen)
{
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        test_fail(__FILE__, __LINE__, "out of memory");
        return -ENOMEM;
    }
    memcpy(copy, in, len);
    int rc = event_decode(copy, len, ev, err, errlen);
    free(copy);
    return rc;
}

static uint64_t event_test_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int event_test_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

static int event_test_same(const event_t *a, const event_t *b)
{
    return a->op == b->op && a->user_len == b->user_len && a->item_len == b->item_len &&
           memcmp(a->user, b->user, a->user_len + 1u) == 0 &&
           memcmp(a->item, b->item, a->item_len + 1u) == 0 && a->has_ts == b->has_ts &&
           (!a->has_ts || a->ts == b->ts);
}

static void event_test_set(event_t *ev, event_op_t op, const char *user, size_t user_len,
                           const char *item, size_t item_len, int has_ts, int64_t ts)
{
    memset(ev, 0, sizeof(*ev));
    ev->op = op;
    memcpy(ev->user, user, user_len);
    ev->user_len = (uint16_t)user_len;
    memcpy(ev->item, item, item_len);
    ev->item_len = (uint16_t)item_len;
    ev->has_ts = has_ts;
    ev->ts = ts;
}

/* ---- good inputs --------------------------------------------------------- */

typedef struct {
    const char *in;
    size_t len;
    event_op_t op;
    const char *user, *item;
    int has_ts;
    int64_t ts;
} event_test_good_t;

static const event_test_good_t event_test_good[] = {
    /* JSON */
    { EVT_LIT("{\"user\":\"alice\",\"item\":\"book-1\"}"), EVENT_ADD, "alice", "book-1", 0, 0 },
    { EVT_LIT("{\"user\": \"alice\", \"item\": \"book-1\", \"ts\": 1700000000123}"), EVENT_ADD,
      "alice", "book-1", 1, 1700000000123 },
    { EVT_LIT("{\"user\":42,\"item\":7}"), EVENT_ADD, "42", "7", 0, 0 },
    { EVT_LIT("{\"user\":-7,\"item\":0,\"ts\":0}"), EVENT_ADD, "-7", "0", 1, 0 },
    { EVT_LIT("{\"user\":9223372036854775807,\"item\":-9223372036854775808}"), EVENT_ADD,
      "9223372036854775807", "-9223372036854775808", 0, 0 },
    { EVT_LIT(" \r\n\t{\"item\":\"b\",\"extra\":{\"nested\":[1,2.5,{\"x\":null}]},\"n\":1e9,"
              "\"user\":\"a\",\"flag\":true}\n"), EVENT_ADD, "a", "b", 0, 0 },
    { EVT_LIT("{\"user\":\"a\",\"op\":\"forget\"}"), EVENT_FORGET, "a", "", 0, 0 },
    { EVT_LIT("{\"op\":\"forget\",\"user\":12,\"item\":\"zzz\",\"ts\":5}"), EVENT_FORGET, "12",
      "", 1, 5 },
    { EVT_LIT("{\"user\":\"a\",\"op\":\"forget\",\"item\":[1.5,null]}"), EVENT_FORGET, "a", "",
      0, 0 },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":null,\"op\":null}"), EVENT_ADD, "a", "b", 0,
      0 },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":9223372036854775807}"), EVENT_ADD, "a", "b",
      1, INT64_MAX },
    { EVT_LIT("{\"user\":\"caf\\u00e9\",\"item\":\"\\u65e5\\u672c\"}"), EVENT_ADD,
      "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", 0, 0 },
    { EVT_LIT("{\"user\":\"\\ud83d\\ude00\",\"item\":\"Jos\xc3\xa9\"}"), EVENT_ADD,
      "\xf0\x9f\x98\x80", "Jos\xc3\xa9", 0, 0 },
    { EVT_LIT("{\"user\":\" a b \",\"item\":\"a\\\"b\\\\c\\/d\"}"), EVENT_ADD, " a b ",
      "a\"b\\c/d", 0, 0 },
    /* text */
    { EVT_LIT("alice\tbook"), EVENT_ADD, "alice", "book", 0, 0 },
    { EVT_LIT("alice\tbook\n"), EVENT_ADD, "alice", "book", 0, 0 },
    { EVT_LIT("alice\tbook\r\n"), EVENT_ADD, "alice", "book", 0, 0 },
    { EVT_LIT("alice\tbook\t1700000000123\n"), EVENT_ADD, "alice", "book", 1, 1700000000123 },
    { EVT_LIT("alice\tbook\t1700000000123\r\n"), EVENT_ADD, "alice", "book", 1, 1700000000123 },
    { EVT_LIT("alice\tbook\t0"), EVENT_ADD, "alice", "book", 1, 0 },
    { EVT_LIT("alice\tbook\t00042"), EVENT_ADD, "alice", "book", 1, 42 },
    { EVT_LIT("a\tb\t9223372036854775807"), EVENT_ADD, "a", "b", 1, INT64_MAX },
    { EVT_LIT(" alice \t book "), EVENT_ADD, " alice ", " book ", 0, 0 },
    { EVT_LIT("42\t7"), EVENT_ADD, "42", "7", 0, 0 },
    { EVT_LIT("[1,2]\t\"x\"\\y"), EVENT_ADD, "[1,2]", "\"x\"\\y", 0, 0 },
    { EVT_LIT("a{\tb}"), EVENT_ADD, "a{", "b}", 0, 0 },
    { EVT_LIT("caf\xc3\xa9\t\xe6\x97\xa5\xe6\x9c\xac\t1"), EVENT_ADD, "caf\xc3\xa9",
      "\xe6\x97\xa5\xe6\x9c\xac", 1, 1 },
    /* UTF-8 at the edges of the valid ranges */
    { EVT_LIT("\xf4\x8f\xbf\xbf\t\xed\x9f\xbf"), EVENT_ADD, "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf",
      0, 0 },
    { EVT_LIT("\xee\x80\x80\t\xf0\x90\x80\x80"), EVENT_ADD, "\xee\x80\x80", "\xf0\x90\x80\x80",
      0, 0 },
    { EVT_LIT("\xc2\x80\t\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf"), EVENT_ADD, "\xc2\x80",
      "\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 0, 0 },
};

TEST(event_decode_good)
{
    for (size_t k = 0; k < sizeof(event_test_good) / sizeof(event_test_good[0]); k++) {
        const event_test_good_t *g = &event_test_good[k];
        event_t ev;
        char err[128] = "";
        int rc = event_test_decode(g->in, g->len, &ev, err, sizeof(err));
        if (rc != 0) {
            test_fail(__FILE__, __LINE__, "case %zu refused: %s", k, err);
            continue;
        }
        if (ev.op != g->op || strcmp(ev.user, g->user) != 0 || strcmp(ev.item, g->item) != 0 ||
            ev.user_len != strlen(g->user) || ev.item_len != strlen(g->item) ||
            ev.has_ts != g->has_ts || (g->has_ts && ev.ts != g->ts))
            test_fail(__FILE__, __LINE__, "case %zu: got op %d user '%s' (%u) item '%s' (%u) "
                      "ts %d/%lld", k, (int)ev.op, ev.user, ev.user_len, ev.item, ev.item_len,
                      ev.has_ts, (long long)ev.ts);
    }
}

/* ---- refused inputs ------------------------------------------------------ */

typedef struct {
    const char *in;
    size_t len;
    const char *why; /* a substring of the reason */
} event_test_bad_t;

static const event_test_bad_t event_test_bad[] = {
    /* empty */
    { EVT_LIT(""), "empty message" },
    { EVT_LIT("\n"), "empty message" },
    { EVT_LIT("  \t\r\n \n"), "empty message" },
    { EVT_LIT("\t\t"), "empty message" },
    /* not JSON */
    { EVT_LIT("{"), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\""), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\"} x"), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\"}{}"), "json: " },
    { EVT_LIT("{\"user\":\"a\" \"item\":\"b\"}"), "json: " },
    { EVT_LIT("{user:\"a\",item:\"b\"}"), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",}"), "json: " },
    { EVT_LIT("{\"user\":'a',\"item\":\"b\"}"), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":NaN}"), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":0x10}"), "json: " },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":01}"), "json: " },
    /* not an object: no '{' first, so it is text, with one field */
    { EVT_LIT("[{\"user\":\"a\",\"item\":\"b\"}]"), "text: 1 field," },
    { EVT_LIT("\"alice\""), "text: 1 field," },
    { EVT_LIT("42"), "text: 1 field," },
    /* missing fields */
    { EVT_LIT("{}"), "json: missing \"user\"" },
    { EVT_LIT("{\"item\":\"b\",\"ts\":1}"), "json: missing \"user\"" },
    { EVT_LIT("{\"User\":\"a\",\"item\":\"b\"}"), "json: missing \"user\"" },
    { EVT_LIT("{\"op\":\"forget\"}"), "json: missing \"user\"" },
    { EVT_LIT("{\"user\":\"a\"}"), "json: missing \"item\"" },
    { EVT_LIT("{\"user\":\"a\",\"ts\":1,\"items\":\"b\"}"), "json: missing \"item\"" },
    /* bad types */
    { EVT_LIT("{\"user\":1.5,\"item\":\"b\"}"), "user: must be a string or integer, not real" },
    { EVT_LIT("{\"user\":1e3,\"item\":\"b\"}"), "user: must be a string or integer, not real" },
    { EVT_LIT("{\"user\":1.0,\"item\":\"b\"}"), "user: must be a string or integer, not real" },
    { EVT_LIT("{\"user\":true,\"item\":\"b\"}"), "user: must be a string or integer, not boolean" },
    { EVT_LIT("{\"user\":false,\"item\":\"b\"}"), "user: must be a string or integer, not boolean" },
    { EVT_LIT("{\"user\":null,\"item\":\"b\"}"), "user: must be a string or integer, not null" },
    { EVT_LIT("{\"user\":[\"a\"],\"item\":\"b\"}"), "user: must be a string or integer, not array" },
    { EVT_LIT("{\"user\":{\"id\":1},\"item\":\"b\"}"),
      "user: must be a string or integer, not object" },
    { EVT_LIT("{\"user\":\"a\",\"item\":2.5}"), "item: must be a string or integer, not real" },
    { EVT_LIT("{\"user\":\"a\",\"item\":true}"), "item: must be a string or integer, not boolean" },
    { EVT_LIT("{\"user\":\"a\",\"item\":null}"), "item: must be a string or integer, not null" },
    { EVT_LIT("{\"user\":\"a\",\"item\":[]}"), "item: must be a string or integer, not array" },
    { EVT_LIT("{\"user\":\"a\",\"item\":{}}"), "item: must be a string or integer, not object" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":-1}"), "ts: negative" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":-9223372036854775808}"), "ts: negative" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":1.5}"), "ts: must be an integer, not real" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":1e12}"), "ts: must be an integer, not real" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":\"17\"}"),
      "ts: must be an integer, not string" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":true}"), "ts: must be an integer, not boolean" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":[1]}"), "ts: must be an integer, not array" },
    { EVT_LIT("{\"user\":\"a\",\"op\":\"forget\",\"ts\":-5}"), "ts: negative" },
    /* integers beyond int64: refused by the parser */
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":9223372036854775808}"), "json: " },
    { EVT_LIT("{\"user\":18446744073709551616,\"item\":\"b\"}"), "json: " },
    /* op */
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"op\":\"add\"}"), "op: must be \"forget\"" },
    { EVT_LIT("{\"user\":\"a\",\"op\":\"FORGET\"}"), "op: must be \"forget\"" },
    { EVT_LIT("{\"user\":\"a\",\"op\":\"forget \"}"), "op: must be \"forget\"" },
    { EVT_LIT("{\"user\":\"a\",\"op\":\"\"}"), "op: must be \"forget\"" },
    { EVT_LIT("{\"user\":\"a\",\"op\":2}"), "op: must be \"forget\"" },
    { EVT_LIT("{\"user\":\"a\",\"op\":[\"forget\"]}"), "op: must be \"forget\"" },
    /* duplicate keys, also of unknown fields */
    { EVT_LIT("{\"user\":\"a\",\"user\":\"b\",\"item\":\"c\"}"), "duplicate object key" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"ts\":1,\"ts\":1}"), "duplicate object key" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"x\":1,\"x\":2}"), "duplicate object key" },
    /* NUL: escaped, raw in JSON, raw in text */
    { EVT_LIT("{\"user\":\"a\\u0000b\",\"item\":\"c\"}"), "json: \\u0000 in a string" },
    { EVT_LIT("{\"user\":\"a\0b\",\"item\":\"c\"}"), "json: " },
    { EVT_LIT("a\0b\tc"), "user: control character 0x00 at byte 1" },
    { EVT_LIT("a\tb\0"), "item: control character 0x00 at byte 1" },
    /* control characters */
    { EVT_LIT("{\"user\":\"a\\tb\",\"item\":\"c\"}"), "user: control character 0x09" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"\\u001f\"}"), "item: control character 0x1f" },
    { EVT_LIT("{\"user\":\"\\u007f\",\"item\":\"c\"}"), "user: control character 0x7f" },
    { EVT_LIT("{\"user\":\"a\x7f\",\"item\":\"c\"}"), "user: control character 0x7f" },
    { EVT_LIT("{\"user\":\"a\\n\",\"item\":\"c\"}"), "user: control character 0x0a" },
    { EVT_LIT("{\"user\":\"a\x01\",\"item\":\"c\"}"), "json: " }, /* raw: invalid JSON */
    { EVT_LIT("a\x01\tb"), "user: control character 0x01" },
    { EVT_LIT(" \na\tb"), "user: control character 0x0a" },
    { EVT_LIT("a\tb\rc"), "item: control character 0x0d" },
    { EVT_LIT("a\tb\r"), "item: control character 0x0d" },
    { EVT_LIT("a\tb\n\n"), "item: control character 0x0a" },
    { EVT_LIT("a\tb\x1b[31m"), "item: control character 0x1b" },
    { EVT_LIT("a\x7f\tb"), "user: control character 0x7f" },
    /* empty ids */
    { EVT_LIT("\tb"), "user: empty" },
    { EVT_LIT("a\t"), "item: empty" },
    { EVT_LIT("a\t\n"), "item: empty" },
    { EVT_LIT("a\t\t5"), "item: empty" },
    { EVT_LIT("{\"user\":\"\",\"item\":\"b\"}"), "user: empty" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"\"}"), "item: empty" },
    { EVT_LIT("{\"user\":\"\",\"op\":\"forget\"}"), "user: empty" },
    /* text field counts */
    { EVT_LIT("alice"), "text: 1 field," },
    { EVT_LIT("alice\n"), "text: 1 field," },
    { EVT_LIT("a\tb\t1\tx"), "text: 4 fields" },
    { EVT_LIT("a\tb\t1\t"), "text: 4 fields" },
    { EVT_LIT("a\t\t\t\t"), "text: 5 fields" },
    /* text ts */
    { EVT_LIT("a\tb\t"), "ts: empty" },
    { EVT_LIT("a\tb\t\n"), "ts: empty" },
    { EVT_LIT("a\tb\t-1"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t+1"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t1.5"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t 1"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t1 "), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t0x10"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t1\r"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t1\n\n"), "ts: not a non-negative integer" },
    { EVT_LIT("a\tb\t9223372036854775808"), "ts: out of range" },
    { EVT_LIT("a\tb\t99999999999999999999999"), "ts: out of range" },
    /* invalid UTF-8 in text: overlongs, surrogates, > U+10FFFF, stray and truncated bytes */
    { EVT_LIT("\xc0\x80\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xc1\xbf\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("a\t\xe0\x80\xaf"), "item: invalid UTF-8 at byte 0" },
    { EVT_LIT("a\t\xe0\x9f\xbf"), "item: invalid UTF-8 at byte 0" },
    { EVT_LIT("a\tx\xf0\x80\x80\xaf"), "item: invalid UTF-8 at byte 1" },
    { EVT_LIT("a\t\xf0\x8f\xbf\xbf"), "item: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xed\xa0\x80\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xed\xbf\xbf\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xed\xa0\xbd\xed\xb8\x80\tb"), "user: invalid UTF-8" }, /* CESU-8 pair */
    { EVT_LIT("\xf4\x90\x80\x80\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xf5\x80\x80\x80\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xf8\x88\x80\x80\x80\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xfe\tb"), "user: invalid UTF-8" },
    { EVT_LIT("\xff\tb"), "user: invalid UTF-8" },
    { EVT_LIT("\x80\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("ab\xc3\tb"), "user: invalid UTF-8 at byte 2" },
    { EVT_LIT("\xc3\x28\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("\xe6\x97\x28\tb"), "user: invalid UTF-8 at byte 0" },
    { EVT_LIT("a\tb\xe6\x97"), "item: invalid UTF-8 at byte 1" },
    { EVT_LIT("a\tb\xe6\x97\n"), "item: invalid UTF-8 at byte 1" },
    { EVT_LIT("a\tb\xf0\x9f\x98"), "item: invalid UTF-8 at byte 1" },
    /* invalid UTF-8 in JSON: refused by the parser, anywhere in the message */
    { EVT_LIT("{\"user\":\"\xc0\x80\",\"item\":\"b\"}"), "json: invalid UTF-8" },
    { EVT_LIT("{\"user\":\"\xed\xa0\x80\",\"item\":\"b\"}"), "json: invalid UTF-8" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"\xf4\x90\x80\x80\"}"), "json: invalid UTF-8" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"\xe6\x97\"}"), "json: invalid UTF-8" },
    { EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\"x\":\"\xff\"}"), "json: invalid UTF-8" },
    { EVT_LIT("{\"user\":\"\\ud800\",\"item\":\"b\"}"), "json: " },
    { EVT_LIT("{\"user\":\"\\udc00x\",\"item\":\"b\"}"), "json: " },
    { EVT_LIT("{\"user\":\"\\ud83dx\",\"item\":\"b\"}"), "json: " },
};

TEST(event_decode_bad)
{
    for (size_t k = 0; k < sizeof(event_test_bad) / sizeof(event_test_bad[0]); k++) {
        const event_test_bad_t *b = &event_test_bad[k];
        event_t ev;
        char err[160] = "";
        int rc = event_test_decode(b->in, b->len, &ev, err, sizeof(err));
        if (rc != -EBADMSG || !strstr(err, b->why) || !event_test_printable(err))
            test_fail(__FILE__, __LINE__, "case %zu: rc %d, reason '%s', want '%s'", k, rc, err,
                      b->why);
        if (ev.op != 0 || ev.user_len != 0 || ev.item_len != 0 || ev.user[0] || ev.item[0] ||
            ev.has_ts)
            test_fail(__FILE__, __LINE__, "case %zu: refused event left fields set", k);
    }
}

/* ---- limits and the error buffer ----------------------------------------- */

/* Decodes in and checks the outcome: want_why NULL means accepted. */
static void event_test_expect(int line, const char *in, size_t len, const char *want_why)
{
    event_t ev;
    char err[160] = "";
    int rc = event_test_decode(in, len, &ev, err, sizeof(err));
    if (want_why ? rc != -EBADMSG || !strstr(err, want_why) : rc != 0)
        test_fail(__FILE__, line, "len %zu: rc %d, reason '%s', want %s", len, rc, err,
                  want_why ? want_why : "accepted");
}

TEST(event_decode_limits)
{
    char id[EVENT_ID_MAX + 2], msg[EVENT_MAX_BYTES + 64];
    memset(id, 'x', sizeof(id));
    for (int n = EVENT_ID_MAX; n <= EVENT_ID_MAX + 1; n++) {
        const char *uwhy = n > EVENT_ID_MAX ? "user: id longer than 256 bytes" : NULL;
        const char *iwhy = n > EVENT_ID_MAX ? "item: id longer than 256 bytes" : NULL;
        int len = snprintf(msg, sizeof(msg), "%.*s\tb\t1\n", n, id);
        event_test_expect(__LINE__, msg, (size_t)len, uwhy);
        len = snprintf(msg, sizeof(msg), "a\t%.*s", n, id);
        event_test_expect(__LINE__, msg, (size_t)len, iwhy);
        len = snprintf(msg, sizeof(msg), "{\"user\":\"%.*s\",\"item\":\"b\"}", n, id);
        event_test_expect(__LINE__, msg, (size_t)len, uwhy);
        len = snprintf(msg, sizeof(msg), "{\"user\":\"a\",\"item\":\"%.*s\"}", n, id);
        event_test_expect(__LINE__, msg, (size_t)len, iwhy);
        len = snprintf(msg, sizeof(msg), "{\"user\":\"%.*s\",\"op\":\"forget\"}", n, id);
        event_test_expect(__LINE__, msg, (size_t)len, uwhy);
    }
    /* The limit is in bytes: 128 two-byte characters fit, one more byte does not. */
    char wide[2 * EVENT_ID_MAX + 8] = "";
    for (int k = 0; k < EVENT_ID_MAX / 2; k++)
        strcat(wide, "\xc3\xa9");
    int len = snprintf(msg, sizeof(msg), "%s\tb", wide);
    event_test_expect(__LINE__, msg, (size_t)len, NULL);
    len = snprintf(msg, sizeof(msg), "a%s\tb", wide);
    event_test_expect(__LINE__, msg, (size_t)len, "user: id longer than 256 bytes");
    /* A JSON id of 256 bytes written with escapes is 256 bytes. */
    len = snprintf(msg, sizeof(msg), "{\"user\":\"");
    for (int k = 0; k < EVENT_ID_MAX / 2; k++)
        len += snprintf(msg + len, sizeof(msg) - (size_t)len, "\\u00e9");
    len += snprintf(msg + len, sizeof(msg) - (size_t)len, "\",\"item\":\"b\"}");
    event_test_expect(__LINE__, msg, (size_t)len, NULL);

    /* Messages of exactly EVENT_MAX_BYTES are read; one byte more is refused. */
    for (size_t total = EVENT_MAX_BYTES; total <= EVENT_MAX_BYTES + 1; total++) {
        const char *head = "{\"user\":\"a\",\"item\":\"b\",\"pad\":\"";
        size_t hl = strlen(head);
        memcpy(msg, head, hl);
        memset(msg + hl, 'p', total - hl - 2);
        memcpy(msg + total - 2, "\"}", 2);
        event_test_expect(__LINE__, msg, total,
                          total > EVENT_MAX_BYTES ? "message: 4097 bytes, limit 4096" : NULL);
        memset(msg, ' ', total);
        memcpy(msg + total - 4, "a\tb\n", 4); /* leading blanks stay in the user id */
        event_test_expect(__LINE__, msg, total,
                          total > EVENT_MAX_BYTES ? "message: 4097 bytes" : "user: id longer");
    }
    event_t ev;
    char err[160] = "";
    CHECK(event_decode("a\tb", SIZE_MAX, &ev, err, sizeof(err)) == -EBADMSG); /* never read */
    CHECK(strstr(err, "limit 4096") != NULL);

    /* Deep nesting in an unknown field: accepted or refused, not a crash. */
    size_t depth = (EVENT_MAX_BYTES - 40) / 2, at = 0;
    at += (size_t)snprintf(msg, sizeof(msg), "{\"user\":\"a\",\"item\":\"b\",\"x\":");
    memset(msg + at, '[', depth);
    memset(msg + at + depth, ']', depth);
    at += 2 * depth;
    msg[at++] = '}';
    int rc = event_test_decode(msg, at, &ev, err, sizeof(err));
    CHECK(rc == 0 || rc == -EBADMSG);
}

TEST(event_decode_err_buffer)
{
    event_t ev;
    CHECK(event_decode(NULL, 0, &ev, NULL, 0) == -EBADMSG);
    CHECK(event_decode("a\tb", 3, &ev, NULL, 0) == 0);

    char err[16];
    memset(err, '#', sizeof(err));
    CHECK(event_decode("", 0, &ev, err, 0) == -EBADMSG);
    for (size_t k = 0; k < sizeof(err); k++)
        CHECK(err[k] == '#');
    CHECK(event_decode("", 0, &ev, err, 5) == -EBADMSG);
    CHECK(strcmp(err, "empt") == 0);
    CHECK(err[5] == '#');

    /* A refused message clears the fields an earlier field had filled. */
    memset(&ev, 'X', sizeof(ev));
    char big[160];
    CHECK(event_test_decode(EVT_LIT("{\"user\":\"abc\",\"item\":1.5}"), &ev, big, sizeof(big)) ==
          -EBADMSG);
    CHECK(ev.op == 0 && ev.user_len == 0 && ev.user[0] == '\0' && ev.has_ts == 0);
    memset(&ev, 'X', sizeof(ev));
    CHECK(event_test_decode(EVT_LIT("abc\tdef\tx"), &ev, big, sizeof(big)) == -EBADMSG);
    CHECK(ev.op == 0 && ev.user_len == 0 && ev.item_len == 0 && ev.item[0] == '\0');

    /* jansson quotes input in its messages; the reason stays printable. */
    CHECK(event_test_decode(EVT_LIT("{\"user\":\"a\",\"item\":\"b\",\x01\x02\x1b}"), &ev, big,
                            sizeof(big)) == -EBADMSG);
    CHECK(strncmp(big, "json: ", 6) == 0);
    CHECK(event_test_printable(big));
}

/* ---- encode -------------------------------------------------------------- */

/* Encodes with every cap from 0 to past the length and checks -ENOSPC, the
 * NUL, and that nothing is written at or past cap; returns the full output. */
static int event_test_encode_caps(int line, int json, const event_t *ev, char *out, size_t outlen)
{
    char buf[EVENT_MAX_BYTES + 16];
    int n = json ? event_encode_json(ev, buf, sizeof(buf)) : event_encode_text(ev, buf, sizeof(buf));
    if (n < 0 || (size_t)n >= outlen) {
        test_fail(__FILE__, line, "encode: %d", n);
        return n;
    }
    memcpy(out, buf, (size_t)n + 1);
    for (size_t cap = 0; cap <= (size_t)n + 1; cap++) {
        memset(buf, '#', sizeof(buf));
        int m = json ? event_encode_json(ev, buf, cap) : event_encode_text(ev, buf, cap);
        int want = cap < (size_t)n ? -ENOSPC : n;
        int tail_ok = 1;
        for (size_t k = cap; k < sizeof(buf); k++)
            tail_ok &= buf[k] == '#';
        if (m != want || !tail_ok || (m >= 0 && memcmp(buf, out, (size_t)n) != 0) ||
            (cap > (size_t)n && buf[n] != '\0'))
            test_fail(__FILE__, line, "cap %zu: got %d want %d (tail %s)", cap, m, want,
                      tail_ok ? "ok" : "written");
    }
    return n;
}

TEST(event_encode)
{
    event_t ev;
    char out[EVENT_MAX_BYTES + 16];

    event_test_set(&ev, EVENT_ADD, EVT_LIT("alice"), EVT_LIT("book"), 1, 17);
    CHECK(event_test_encode_caps(__LINE__, 1, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "{\"user\":\"alice\",\"item\":\"book\",\"ts\":17}") == 0);
    CHECK(event_test_encode_caps(__LINE__, 0, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "alice\tbook\t17") == 0);

    event_test_set(&ev, EVENT_ADD, EVT_LIT("alice"), EVT_LIT("book"), 0, 0);
    CHECK(event_test_encode_caps(__LINE__, 1, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "{\"user\":\"alice\",\"item\":\"book\"}") == 0);
    CHECK(event_test_encode_caps(__LINE__, 0, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "alice\tbook") == 0);

    event_test_set(&ev, EVENT_FORGET, EVT_LIT("alice"), EVT_LIT(""), 0, 0);
    CHECK(event_test_encode_caps(__LINE__, 1, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "{\"user\":\"alice\",\"op\":\"forget\"}") == 0);
    event_test_set(&ev, EVENT_FORGET, EVT_LIT("alice"), EVT_LIT(""), 1, 0);
    CHECK(event_test_encode_caps(__LINE__, 1, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "{\"user\":\"alice\",\"op\":\"forget\",\"ts\":0}") == 0);

    /* JSON escapes quotes, backslashes, every control and DEL, NUL included;
     * UTF-8 passes through. */
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a\"b\\c/\x01\n\t\r\b\f\x7f\xc3\xa9"),
                   EVT_LIT("x\0y"), 1, INT64_MIN);
    CHECK(event_test_encode_caps(__LINE__, 1, &ev, out, sizeof(out)) > 0);
    CHECK(strcmp(out, "{\"user\":\"a\\\"b\\\\c/\\u0001\\n\\t\\r\\u0008\\u000c\\u007f\xc3\xa9\","
                      "\"item\":\"x\\u0000y\",\"ts\":-9223372036854775808}") == 0);
    char err[160] = "";
    CHECK(event_test_decode(out, strlen(out), &ev, err, sizeof(err)) == -EBADMSG);
    CHECK(strstr(err, "json: ") != NULL); /* \u0000 */
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a\x01"), EVT_LIT("b"), 0, 0);
    CHECK(event_test_encode_caps(__LINE__, 1, &ev, out, sizeof(out)) > 0);
    CHECK(event_test_decode(out, strlen(out), &ev, err, sizeof(err)) == -EBADMSG);
    CHECK(strstr(err, "user: control character 0x01") != NULL);

    /* The worst case fits in EVENT_MAX_BYTES. */
    char ctl[EVENT_ID_MAX];
    memset(ctl, 0x01, sizeof(ctl));
    event_test_set(&ev, EVENT_ADD, ctl, sizeof(ctl), ctl, sizeof(ctl), 1, INT64_MIN);
    int n = event_encode_json(&ev, out, EVENT_MAX_BYTES);
    CHECK(n > 0 && n < EVENT_MAX_BYTES);

    /* What an encoding cannot carry is refused. */
    event_test_set(&ev, EVENT_FORGET, EVT_LIT("alice"), EVT_LIT(""), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a\tb"), EVT_LIT("c"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a"), EVT_LIT("c\n"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a"), EVT_LIT("c\x7f"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("\xc0\x80"), EVT_LIT("c"), 0, 0);
    CHECK(event_encode_json(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a"), EVT_LIT("\xed\xa0\x80"), 0, 0);
    CHECK(event_encode_json(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("a"), EVT_LIT("b"), 0, 0);
    ev.op = 0;
    CHECK(event_encode_json(&ev, out, sizeof(out)) == -EINVAL);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    ev.op = EVENT_ADD;
    ev.user_len = EVENT_ID_MAX + 1;
    CHECK(event_encode_json(&ev, out, sizeof(out)) == -EINVAL);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    /* Text lines the decoder would take for JSON or for empty. */
    event_test_set(&ev, EVENT_ADD, EVT_LIT("{a"), EVT_LIT("b"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("  {a"), EVT_LIT("b"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT("  "), EVT_LIT(" {b"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT(" "), EVT_LIT(" "), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == -EINVAL);
    event_test_set(&ev, EVENT_ADD, EVT_LIT(" "), EVT_LIT(" "), 1, 3);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == (int)strlen(" \t \t3"));
    event_test_set(&ev, EVENT_ADD, EVT_LIT(" a"), EVT_LIT("{b"), 0, 0);
    CHECK(event_encode_text(&ev, out, sizeof(out)) == (int)strlen(" a\t{b"));
    /* NULL buffer with cap 0 measures nothing but does not crash. */
    CHECK(event_encode_json(&ev, NULL, 0) == -ENOSPC);
    CHECK(event_encode_text(&ev, NULL, 0) == -ENOSPC);
}

/* ---- round trip ---------------------------------------------------------- */

/* A random id of valid UTF-8 without controls, 1..EVENT_ID_MAX bytes, often
 * with the characters that need care: quotes, backslashes, '{', spaces. */
static size_t event_test_random_id(uint64_t *rng, char *out)
{
    size_t want = 1 + event_test_rng(rng) % (event_test_rng(rng) % 4 == 0 ? EVENT_ID_MAX : 24);
    size_t n = 0;
    if (event_test_rng(rng) % 8 == 0) {
        while (n < want && event_test_rng(rng) % 2)
            out[n++] = ' ';
        if (n < want)
            out[n++] = '{';
    }
    while (n < want) {
        uint32_t cp;
        switch (event_test_rng(rng) % 6) {
        case 0: cp = "\"\\{} /"[event_test_rng(rng) % 6]; break;
        case 1: cp = 0x80 + (uint32_t)(event_test_rng(rng) % (0x800 - 0x80)); break;
        case 2:
            do
                cp = 0x800 + (uint32_t)(event_test_rng(rng) % (0x10000 - 0x800));
            while (cp >= 0xd800 && cp <= 0xdfff);
            break;
        case 3: cp = 0x10000 + (uint32_t)(event_test_rng(rng) % (0x110000 - 0x10000)); break;
        default: cp = 0x20 + (uint32_t)(event_test_rng(rng) % 0x5f); break;
        }
        char u[4];
        size_t k;
        if (cp < 0x80) {
            u[0] = (char)cp, k = 1;
        } else if (cp < 0x800) {
            u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), k = 2;
        } else if (cp < 0x10000) {
            u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
            u[2] = (char)(0x80 | (cp & 0x3f)), k = 3;
        } else {
            u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
            u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), k = 4;
        }
        if (n + k > want)
            break;
        memcpy(out + n, u, k);
        n += k;
    }
    if (n == 0)
        out[n++] = 'z';
    return n;
}

/* Whether the decoder reads user<TAB>item[<TAB>ts] as text: its first
 * non-blank byte is not '{' and it is not all blank. */
static int event_test_text_ok(const event_t *ev)
{
    size_t i = 0;
    while (i < ev->user_len && ev->user[i] == ' ')
        i++;
    if (i < ev->user_len)
        return ev->user[i] != '{';
    for (i = 0; i < ev->item_len && ev->item[i] == ' '; i++)
        ;
    return i < ev->item_len ? ev->item[i] != '{' : ev->has_ts;
}

TEST(event_round_trip)
{
    uint64_t rng = 20240611;
    int text_refused = 0;
    for (int it = 0; it < 20000; it++) {
        event_t ev, back;
        char buf[EVENT_MAX_BYTES], err[160] = "", id1[EVENT_ID_MAX], id2[EVENT_ID_MAX];
        size_t n1 = event_test_random_id(&rng, id1), n2 = event_test_random_id(&rng, id2);
        int forget = event_test_rng(&rng) % 8 == 0;
        int has_ts = event_test_rng(&rng) % 2;
        int64_t ts = (int64_t)(event_test_rng(&rng) >> (1 + event_test_rng(&rng) % 63));
        event_test_set(&ev, forget ? EVENT_FORGET : EVENT_ADD, id1, n1, id2, forget ? 0 : n2,
                       has_ts, ts);

        int n = event_encode_json(&ev, buf, sizeof(buf));
        if (n <= 0 || event_test_decode(buf, (size_t)n, &back, err, sizeof(err)) != 0 ||
            !event_test_same(&ev, &back)) {
            test_fail(__FILE__, __LINE__, "json iteration %d: encode %d, '%.*s': %s", it, n,
                      n > 0 ? n : 0, buf, err);
            return;
        }
        if (forget)
            continue;
        n = event_encode_text(&ev, buf, sizeof(buf));
        if (!event_test_text_ok(&ev)) {
            CHECK(n == -EINVAL);
            text_refused++;
            continue;
        }
        if (n <= 0 || event_test_decode(buf, (size_t)n, &back, err, sizeof(err)) != 0 ||
            !event_test_same(&ev, &back)) {
            test_fail(__FILE__, __LINE__, "text iteration %d: encode %d, '%.*s': %s", it, n,
                      n > 0 ? n : 0, buf, err);
            return;
        }
        /* With a newline, as a line-oriented producer writes it. */
        buf[n++] = '\n';
        CHECK(event_test_decode(buf, (size_t)n, &back, err, sizeof(err)) == 0 &&
              event_test_same(&ev, &back));
    }
    CHECK(text_refused > 0); /* the '{' corner was exercised */
}

/* ---- random and mutated input -------------------------------------------- */

static const char *const event_test_seeds[] = {
    "{\"user\":\"alice\",\"item\":\"book-1\",\"ts\":1700000000123}",
    "{\"user\":42,\"item\":7}",
    "{\"user\":\"a\",\"op\":\"forget\",\"ts\":5}",
    "{\"user\":\"caf\\u00e9\",\"item\":\"\\ud83d\\ude00\",\"x\":[1,{\"y\":null}],\"z\":1.5}",
    "{\"user\":\"Jos\xc3\xa9\",\"item\":\"\xe6\x97\xa5\",\"ts\":null,\"op\":null}",
    "alice\tbook\t1700000000123\n",
    "alice\tbook\r\n",
    "caf\xc3\xa9\t\xf0\x9f\x98\x80\t42",
    "  {\"item\":\"b\",\"user\":\"a\"}\n",
};

static const char event_test_alphabet[] = "{}[]\":,\\/tu0123456789-+.eE \t\r\n\x01\x7f\x80\xbf"
                                          "\xc0\xc3\xed\xf0\xf4\xff" "abnrfx";

/* Writes the next fuzz input into buf (at least EVENT_MAX_BYTES + 64 bytes). */
static size_t event_test_fuzz_input(uint64_t *rng, char *buf)
{
    size_t n_seeds = sizeof(event_test_seeds) / sizeof(event_test_seeds[0]);
    size_t cap = EVENT_MAX_BYTES + 64, n = 0;
    switch (event_test_rng(rng) % 5) {
    case 0: /* random bytes */
        n = event_test_rng(rng) % 300;
        for (size_t k = 0; k < n; k++)
            buf[k] = (char)event_test_rng(rng);
        if (n && event_test_rng(rng) % 2)
            buf[0] = '{';
        return n;
    case 1: /* random JSON-ish bytes */
        n = event_test_rng(rng) % 200;
        for (size_t k = 0; k < n; k++)
            buf[k] = event_test_alphabet[event_test_rng(rng) % (sizeof(event_test_alphabet) - 1)];
        if (n)
            buf[0] = '{';
        return n;
    case 2: /* a long message around the size limit */
        n = EVENT_MAX_BYTES - 8 + event_test_rng(rng) % 16;
        memset(buf, 'x', n);
        memcpy(buf, "{\"user\":\"a\",\"item\":\"b\",\"p\":\"", 28);
        memcpy(buf + n - 2, "\"}", 2);
        break;
    default: { /* a seed, maybe two spliced */
        const char *s = event_test_seeds[event_test_rng(rng) % n_seeds];
        n = strlen(s);
        memcpy(buf, s, n);
        if (event_test_rng(rng) % 4 == 0) {
            const char *t = event_test_seeds[event_test_rng(rng) % n_seeds];
            size_t cut = event_test_rng(rng) % (n + 1), from = event_test_rng(rng) % (strlen(t) + 1);
            n = cut + strlen(t + from);
            memcpy(buf + cut, t + from, strlen(t + from));
        }
        break;
    }
    }
    /* 1..4 mutations */
    int muts = 1 + (int)(event_test_rng(rng) % 4);
    for (int m = 0; m < muts; m++) {
        size_t at = n ? event_test_rng(rng) % n : 0;
        char c = event_test_alphabet[event_test_rng(rng) % (sizeof(event_test_alphabet) - 1)];
        switch (event_test_rng(rng) % 6) {
        case 0:
            if (n)
                buf[at] ^= (char)(1 << (event_test_rng(rng) % 8));
            break;
        case 1:
            if (n)
                buf[at] = c;
            break;
        case 2: /* insert */
            if (n < cap) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = c;
                n++;
            }
            break;
        case 3: /* delete */
            if (n) {
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
            }
            break;
        case 4: /* truncate */
            n = at;
            break;
        default: /* duplicate a chunk */
            if (n) {
                size_t len = 1 + event_test_rng(rng) % (n - at);
                if (n + len <= cap) {
                    memmove(buf + at + len, buf + at, n - at);
                    n += len;
                }
            }
            break;
        }
    }
    return n;
}

TEST(event_decode_fuzz)
{
    uint64_t rng = 7;
    char buf[EVENT_MAX_BYTES + 64], out[EVENT_MAX_BYTES], err[160];
    int accepted = 0, refused = 0;
    for (int it = 0; it < 10000; it++) {
        size_t n = event_test_fuzz_input(&rng, buf);
        event_t ev, back;
        err[0] = '\0';
        int rc = event_test_decode(buf, n, &ev, err, sizeof(err));
        if (rc == -EBADMSG) {
            refused++;
            if (!err[0] || !event_test_printable(err) || ev.op != 0 || ev.user_len != 0)
                test_fail(__FILE__, __LINE__, "iteration %d: refused with reason '%s'", it, err);
            continue;
        }
        if (rc != 0) {
            test_fail(__FILE__, __LINE__, "iteration %d: rc %d", it, rc);
            return;
        }
        accepted++;
        /* An accepted event is well formed, and survives a JSON round trip. */
        int ok = (ev.op == EVENT_ADD || ev.op == EVENT_FORGET) && ev.user_len >= 1 &&
                 ev.user_len <= EVENT_ID_MAX && strlen(ev.user) == ev.user_len &&
                 strlen(ev.item) == ev.item_len && (ev.op == EVENT_FORGET) == (ev.item_len == 0) &&
                 (!ev.has_ts || ev.ts >= 0);
        int m = event_encode_json(&ev, out, sizeof(out));
        ok = ok && m > 0 && event_test_decode(out, (size_t)m, &back, err, sizeof(err)) == 0 &&
             event_test_same(&ev, &back);
        if (!ok)
            test_fail(__FILE__, __LINE__, "iteration %d: accepted event is not well formed", it);
    }
    printf("    %d accepted, %d refused\n", accepted, refused);
    CHECK(accepted >= 500);
    CHECK(refused >= 5000);
}

/* ---- the JSON fast path against jansson ----------------------------------- */

/* A JSON event in the shapes producers send, with random variations: key
 * order, blanks, string or integer ids, extra fields, and the edge cases the
 * fast path hands to jansson (escapes, non-ASCII, negatives, reals, leading
 * zeros, big numbers, duplicate keys, null, nesting). */
static size_t event_test_json_variant(uint64_t *rng, char *buf, size_t cap)
{
    static const char *const values[] = {
        "\"alice\"", "42", "\"b-1\"", "0", "\"\"", "-7", "007", "1.5", "1e3", "null",
        "true", "[1]", "{\"a\":1}", "\"caf\\u00e9\"", "\"tab\\there\"", "\"Jos\xc3\xa9\"",
        "123456789012345678", "1234567890123456789", "99999999999999999999", "\"forget\"",
        "\"x\x01y\"", "\"d\x7f\"", "-0", "\" sp \"",
    };
    static const char *const keys[] = { "user", "item", "ts", "op", "extra", "user", "u\\u0073er" };
    static const char *const blanks[] = { "", "", "", " ", "\n", " \t" };
    size_t nv = sizeof(values) / sizeof(values[0]), nk = sizeof(keys) / sizeof(keys[0]);
    size_t nb = sizeof(blanks) / sizeof(blanks[0]);
    char tmp[1024];
    size_t n = 0;
#define EVENT_TEST_PUT(s) n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%s", (s))
    EVENT_TEST_PUT(blanks[event_test_rng(rng) % nb]);
    EVENT_TEST_PUT("{");
    int fields = 1 + (int)(event_test_rng(rng) % 4);
    for (int f = 0; f < fields && n < sizeof(tmp) - 200; f++) {
        if (f)
            EVENT_TEST_PUT(",");
        EVENT_TEST_PUT(blanks[event_test_rng(rng) % nb]);
        /* Mostly the canonical fields, so the fast path is taken often. */
        const char *key = f < 3 && event_test_rng(rng) % 4 ? (const char *[]){ "user", "item", "ts" }[f]
                                                          : keys[event_test_rng(rng) % nk];
        EVENT_TEST_PUT("\"");
        EVENT_TEST_PUT(key);
        EVENT_TEST_PUT("\"");
        EVENT_TEST_PUT(blanks[event_test_rng(rng) % nb]);
        EVENT_TEST_PUT(":");
        EVENT_TEST_PUT(blanks[event_test_rng(rng) % nb]);
        if (event_test_rng(rng) % 3) {
            char id[32];
            snprintf(id, sizeof(id), event_test_rng(rng) % 2 ? "\"u%llu\"" : "%llu",
                     (unsigned long long)(event_test_rng(rng) % 100000));
            EVENT_TEST_PUT(id);
        } else {
            EVENT_TEST_PUT(values[event_test_rng(rng) % nv]);
        }
        EVENT_TEST_PUT(blanks[event_test_rng(rng) % nb]);
    }
    EVENT_TEST_PUT("}");
    EVENT_TEST_PUT(blanks[event_test_rng(rng) % nb]);
#undef EVENT_TEST_PUT
    if (event_test_rng(rng) % 4 == 0 && n > 0) { /* one byte edit */
        size_t at = event_test_rng(rng) % n;
        tmp[at] = "\"{},: 0a\\\x01"[event_test_rng(rng) % 10];
    }
    if (n > cap)
        n = cap;
    memcpy(buf, tmp, n);
    return n;
}

TEST(event_json_fast_path_agrees_with_jansson)
{
    uint64_t rng = 11;
    char buf[1024], err_a[160], err_b[160];
    int accepted = 0, refused = 0;
    for (int it = 0; it < 60000; it++) {
        size_t n = event_test_json_variant(&rng, buf, sizeof(buf));
        event_t a, b;
        err_a[0] = err_b[0] = '\0';
        int ra = event_test_decode(buf, n, &a, err_a, sizeof(err_a));
        size_t i = 0;
        while (i < n && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
            i++;
        if (i == n || buf[i] != '{')
            continue;
        int rb = event__decode_json_jansson(buf, n, &b, err_b, sizeof(err_b));
        if (ra != rb || (ra == 0 && !event_test_same(&a, &b)) ||
            (ra != 0 && strcmp(err_a, err_b) != 0)) {
            test_fail(__FILE__, __LINE__, "input '%.*s': event_decode %d '%s', jansson %d '%s'",
                      (int)n, buf, ra, err_a, rb, err_b);
            return;
        }
        accepted += ra == 0;
        refused += ra != 0;
    }
    printf("    %d accepted, %d refused, all as jansson alone\n", accepted, refused);
    CHECK(accepted > 5000);
    CHECK(refused > 5000);
}
