/*
 * fuzz_event: io/event.h's decoder on arbitrary message values, the bytes a
 * Kafka producer controls. Besides "no crash, no sanitizer report" it checks
 * what event.h promises:
 *   - a refusal is -EBADMSG (or -ENOMEM) with a printable ASCII reason and
 *     leaves no event behind; err may be NULL when errlen is 0;
 *   - an accepted event has an op of the enum, ids of 1..EVENT_ID_MAX bytes
 *     of strict UTF-8 without controls (checked by an independent
 *     validator), NUL-terminated, an empty item for a forget, ts >= 0;
 *   - the JSON fast path and jansson alone agree on every JSON message:
 *     same result, same event, same reason;
 *   - what was decoded encodes (JSON always; text whenever the message was
 *     text) and decodes back to the same event, and the encoders honour cap;
 *   - io/buf.h's buf_parse_dec, which reads the dead-letter topic's
 *     partition and offset headers (bytes a producer controls too), takes
 *     exactly what "%llu" prints, up to its bound.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/buf.h"
#include "io/event.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_event_same(const event_t *a, const event_t *b)
{
    return a->op == b->op && a->user_len == b->user_len && a->item_len == b->item_len &&
           a->has_ts == b->has_ts && a->ts == b->ts &&
           memcmp(a->user, b->user, a->user_len + 1u) == 0 &&
           memcmp(a->item, b->item, a->item_len + 1u) == 0;
}

static void fuzz_event_check_id(const char *id, uint16_t len)
{
    FUZZ_CHECK(len >= 1 && len <= EVENT_ID_MAX);
    FUZZ_CHECK(id[len] == '\0');
    FUZZ_CHECK(memchr(id, 0, len) == NULL);
    FUZZ_CHECK(fuzz_utf8_ok((const unsigned char *)id, len, 0, 0));
}

/* The promises about one decode's outcome. */
static void fuzz_event_check(int rc, const event_t *ev, const char *err, size_t errlen)
{
    FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
    if (rc < 0) {
        FUZZ_CHECK(ev->op == 0 && ev->user_len == 0 && ev->item_len == 0);
        FUZZ_CHECK(ev->user[0] == '\0' && ev->item[0] == '\0');
        FUZZ_CHECK(ev->has_ts == 0);
        if (errlen) {
            FUZZ_CHECK(fuzz_printable(err, errlen));
            FUZZ_CHECK(err[0] != '\0');
        }
        return;
    }
    FUZZ_CHECK(ev->op == EVENT_ADD || ev->op == EVENT_FORGET);
    fuzz_event_check_id(ev->user, ev->user_len);
    if (ev->op == EVENT_ADD) {
        fuzz_event_check_id(ev->item, ev->item_len);
    } else {
        FUZZ_CHECK(ev->item_len == 0 && ev->item[0] == '\0');
    }
    FUZZ_CHECK(ev->has_ts == 0 || ev->has_ts == 1);
    FUZZ_CHECK(ev->has_ts ? ev->ts >= 0 : ev->ts == 0);
}

/* Encodes ev with enc, checks its cap handling (in heap buffers of exactly
 * cap bytes, so ASan sees a write past cap), decodes the result and
 * compares. Returns the encoder's result. */
static int fuzz_event_round_trip(const event_t *ev,
                                 int (*enc)(const event_t *, char *, size_t))
{
    char *buf = malloc(EVENT_MAX_BYTES);
    FUZZ_CHECK(buf != NULL);
    int n = enc(ev, buf, EVENT_MAX_BYTES); /* "a cap of EVENT_MAX_BYTES always suffices" */
    FUZZ_CHECK(n == -EINVAL || (n > 0 && n < EVENT_MAX_BYTES));
    if (n > 0) {
        FUZZ_CHECK(buf[n] == '\0');
        /* exactly n bytes of room: written without the NUL; one less: -ENOSPC */
        char *tight = malloc((size_t)n);
        FUZZ_CHECK(tight != NULL);
        FUZZ_CHECK(enc(ev, tight, (size_t)n) == n && memcmp(buf, tight, (size_t)n) == 0);
        FUZZ_CHECK(enc(ev, tight, (size_t)n - 1) == -ENOSPC);
        free(tight);
        event_t back;
        char err[128];
        FUZZ_CHECK(event_decode(buf, (size_t)n, &back, err, sizeof(err)) == 0);
        FUZZ_CHECK(fuzz_event_same(ev, &back));
    }
    free(buf);
    return n;
}

/* buf_parse_dec against "%llu": it takes the bytes exactly when printing
 * the value gives them back, under UINT64_MAX and under a bound. */
static void fuzz_event_decimal(const uint8_t *data, size_t size)
{
    uint64_t v = 0, w = 0;
    int rc = buf_parse_dec(data, size, UINT64_MAX, &v);
    if (rc == 0) {
        char back[24];
        int n = snprintf(back, sizeof(back), "%llu", (unsigned long long)v);
        FUZZ_CHECK(n > 0 && (size_t)n == size && memcmp(back, data, size) == 0);
    } else {
        FUZZ_CHECK(rc == -EINVAL);
        /* refused: no digits-only form of 1..20 bytes that fits prints as it */
        int canonical = size >= 1 && size <= 20 && !(data[0] == '0' && size > 1);
        for (size_t k = 0; canonical && k < size; k++)
            canonical = data[k] >= '0' && data[k] <= '9';
        if (canonical) { /* then only an overflow is refused: 20 digits over 2^64 - 1 */
            FUZZ_CHECK(size == 20 && memcmp(data, "18446744073709551615", 20) > 0);
        }
    }
    /* a bound: INT32_MAX, the partition header's */
    int rc32 = buf_parse_dec(data, size, INT32_MAX, &w);
    FUZZ_CHECK(rc32 == ((rc == 0 && v <= INT32_MAX) ? 0 : -EINVAL));
    if (rc32 == 0)
        FUZZ_CHECK(w == v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_event_decimal(data, size < 32 ? size : 32);

    static event_t ev, ev2, ev3;
    char err[256], err2[256];
    memset(err, 0x55, sizeof(err));
    int rc = event_decode(data, size, &ev, err, sizeof(err));
    fuzz_event_check(rc, &ev, err, sizeof(err));

    /* Without an error buffer: the same outcome. */
    int rc2 = event_decode(data, size, &ev2, NULL, 0);
    fuzz_event_check(rc2, &ev2, NULL, 0);
    FUZZ_CHECK(rc2 == rc && fuzz_event_same(&ev, &ev2));

    /* A short error buffer is truncated, still NUL-terminated. */
    char small[8];
    memset(small, 0x55, sizeof(small));
    FUZZ_CHECK(event_decode(data, size, &ev2, small, sizeof(small)) == rc);
    if (rc < 0)
        FUZZ_CHECK(memchr(small, 0, sizeof(small)) && strncmp(small, err, strlen(small)) == 0);

    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    int is_json = i < size && data[i] == '{';

    /* The fast path must never change the answer jansson gives. */
    if (is_json && size <= EVENT_MAX_BYTES) {
        int rc3 = event__decode_json_jansson((const char *)data, size, &ev3, err2, sizeof(err2));
        FUZZ_CHECK(rc3 == rc);
        if (rc == 0)
            FUZZ_CHECK(fuzz_event_same(&ev, &ev3));
        else
            FUZZ_CHECK(strcmp(err, err2) == 0);
    }

    if (rc == 0) {
        FUZZ_CHECK(fuzz_event_round_trip(&ev, event_encode_json) > 0);
        int t = fuzz_event_round_trip(&ev, event_encode_text);
        if (!is_json) /* text in, text out */
            FUZZ_CHECK(t > 0);
        if (ev.op == EVENT_FORGET)
            FUZZ_CHECK(t == -EINVAL);
    }
    return 0;
}
