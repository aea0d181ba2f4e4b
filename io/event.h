/*
 * event: the codec for interaction events, the Kafka message values of
 * docs/INGEST.md, "Event format". Two encodings, auto-detected per message:
 *
 *   JSON  {"user": "<id>", "item": "<id>", "ts": <unix ms, optional>}
 *         {"user": "<id>", "op": "forget"}          (erasure of a user)
 *   text  user<TAB>item[<TAB>ts]                    (one optional trailing \n)
 *
 * A message whose first non-blank byte (blank: space, tab, CR, LF) is '{' is
 * JSON, anything else is text; so a JSON array or string is decoded as text
 * and refused there ("text: 1 field"), and a text user id cannot start with
 * '{'. Every limit below is checked and every refusal has a reason.
 *
 * JSON (parsed by jansson, strictly: no duplicate keys, no trailing bytes,
 * no \u0000): ids are strings or integers; an integer id is kept as its
 * decimal text, so 42 and "42" are the same id (and -7 is "-7"; integers
 * outside int64 are refused, send such ids as strings). "op" absent or null
 * is an add, which needs "item"; "op": "forget" is an erasure, and an "item"
 * beside it is ignored whatever its value; any other "op" is refused. "ts" is
 * optional on both (absent or null: no ts) and must be an integer >= 0.
 * Unknown fields are ignored, whatever their value.
 *
 * Text: exactly 2 or 3 TAB-separated fields after removing one trailing "\n"
 * or "\r\n"; ts is decimal digits only (no sign, no blanks) within int64.
 *
 * Ids, in both encodings: 1..EVENT_ID_MAX bytes of valid UTF-8 (no overlong
 * forms, no surrogates, nothing above U+10FFFF) without ASCII control
 * characters (bytes < 0x20 and 0x7f), since ids end up in TSV dumps, logs
 * and HTTP. Ids are opaque: kept byte for byte, with no trimming of spaces
 * and no Unicode normalisation.
 *
 * Thread-safety: no shared state; event_t is owned by the caller.
 */
#ifndef DERRD_EVENT_H
#define DERRD_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define EVENT_MAX_BYTES 4096 /* longest accepted message value */
#define EVENT_ID_MAX    256  /* longest accepted id, in bytes (UTF-8) */

typedef enum {
    EVENT_ADD = 1,    /* user interacted with item */
    EVENT_FORGET = 2, /* erase the user: item is empty */
} event_op_t;

typedef struct {
    event_op_t op;
    uint16_t user_len, item_len;
    int has_ts;
    int64_t ts;                       /* unix ms; valid when has_ts */
    char user[EVENT_ID_MAX + 1];      /* NUL-terminated copy */
    char item[EVENT_ID_MAX + 1];      /* "" for EVENT_FORGET */
} event_t;

/* Decodes one message value into *ev. buf may be NULL when len is 0.
 * Returns 0, or -EBADMSG with a short reason in err (for example
 * "json: missing \"item\"", "text: 4 fields", "user: id longer than 256
 * bytes", "item: invalid UTF-8 at byte 3"), or -ENOMEM. The reason is
 * printable ASCII, truncated to errlen; err may be NULL when errlen is 0.
 * On failure *ev holds no event (op 0, empty ids). */
int event_decode(const void *buf, size_t len, event_t *ev, char *err, size_t errlen);

/* Whether s[0..n) is an id events may carry: 1 to EVENT_ID_MAX bytes of
 * strict UTF-8 without ASCII control characters (docs/INGEST.md). Returns
 * 0, or -EBADMSG with the reason after "field: " in err. For ids that come
 * from elsewhere than an event (a checkpoint), so that every id derrd
 * holds follows the same rules. */
int event_id_check(const char *field, const char *s, size_t n, char *err, size_t errlen);

/* The length (1 to 4) of the strict UTF-8 sequence s starts with (Unicode
 * table 3-7: no overlongs, no surrogates, nothing above U+10FFFF), of the
 * n bytes there; 0 when it is not one, or n is 0. */
size_t event_utf8_seq(const unsigned char *s, size_t n);

/* Encodes *ev as compact JSON (event_encode_json: keys user, item, ts or
 * user, op, ts; ts only when has_ts) or as text without a trailing newline
 * (event_encode_text) into buf. The ids are user[0..user_len) and
 * item[0..item_len). Returns the length written (without a NUL, which is
 * added when it fits), -ENOSPC when cap is too small (a cap of
 * EVENT_MAX_BYTES always suffices), or -EINVAL when the event cannot be
 * written in that encoding: an id longer than EVENT_ID_MAX or a bad op (both),
 * an id that is not valid UTF-8 (JSON; control characters are escaped),
 * EVENT_FORGET, an id with a control character, or a line that would not
 * decode as text: first non-blank byte '{', or all blank (text). */
int event_encode_json(const event_t *ev, char *buf, size_t cap);
int event_encode_text(const event_t *ev, char *buf, size_t cap);

/* For tests: the JSON decoder without its fast path (jansson alone). */
int event__decode_json_jansson(const char *p, size_t n, event_t *ev, char *err,
                               size_t errlen);

#endif
