/* The "key value" file reader; see config.h. */
#include "io/config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fsutil.h"

/* ---- keys seen so far: a small open-addressing set ------------------------- */

typedef struct {
    char *key; /* NULL = empty slot */
    int line;
} config__seen_t;

typedef struct {
    config__seen_t *slots;
    size_t cap, n; /* cap is 0 or a power of two */
} config__keys_t;

static uint64_t config__hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static config__seen_t *config__keys_slot(config__seen_t *slots, size_t cap, const char *key)
{
    size_t k = (size_t)config__hash(key) & (cap - 1);
    while (slots[k].key && strcmp(slots[k].key, key) != 0)
        k = (k + 1) & (cap - 1);
    return &slots[k];
}

/* Records key at line. Returns 0 when it is new, the line of its first
 * occurrence when it is not, or -ENOMEM. */
static int config__keys_add(config__keys_t *ks, const char *key, int line)
{
    if ((ks->n + 1) * 2 > ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 64;
        config__seen_t *slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        for (size_t k = 0; k < ks->cap; k++)
            if (ks->slots[k].key)
                *config__keys_slot(slots, cap, ks->slots[k].key) = ks->slots[k];
        free(ks->slots);
        ks->slots = slots;
        ks->cap = cap;
    }
    config__seen_t *s = config__keys_slot(ks->slots, ks->cap, key);
    if (s->key)
        return s->line;
    if (!(s->key = strdup(key)))
        return -ENOMEM;
    s->line = line;
    ks->n++;
    return 0;
}

static void config__keys_close(config__keys_t *ks)
{
    for (size_t k = 0; k < ks->cap; k++)
        free(ks->slots[k].key);
    free(ks->slots);
    *ks = (config__keys_t){ 0 };
}

/* ---- one line ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is
 * not one: overlong forms, surrogates and code points past U+10FFFF are
 * refused. */
static size_t config__utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Checks the bytes of one line (without its line end). Returns 0, or
 * -EBADMSG with the reason in err. */
static int config__line_check(const unsigned char *s, size_t n, char *err, size_t errlen)
{
    if (n > CONFIG_MAX_LINE) {
        snprintf(err, errlen, "line longer than %d bytes", CONFIG_MAX_LINE);
        return -EBADMSG;
    }
    for (size_t k = 0; k < n;) {
        unsigned c = s[k];
        if (c == 0) {
            snprintf(err, errlen, "NUL byte in column %zu", k + 1);
            return -EBADMSG;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7F) {
            snprintf(err, errlen, "control character 0x%02X in column %zu", c, k + 1);
            return -EBADMSG;
        }
        size_t len = config__utf8_len(s + k, n - k);
        if (!len) {
            snprintf(err, errlen, "invalid UTF-8 in column %zu", k + 1);
            return -EBADMSG;
        }
        k += len;
    }
    return 0;
}

static int config__is_blank(char c) { return c == ' ' || c == '\t'; }

static int config__is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

#define CONFIG__MAX_KEY 200 /* bytes; the %.200s below print a whole key */

/* Splits the NUL-terminated line s (modified in place) into *key and *value;
 * *key is NULL for a blank or comment line. Returns 0 or -EBADMSG with the
 * reason in err. */
static int config__line_split(char *s, char **key, char **value, char *err, size_t errlen)
{
    *key = *value = NULL;
    while (config__is_blank(*s))
        s++;
    if (!*s || *s == '#')
        return 0;
    if (s[0] == '-' && s[1] == '-') {
        snprintf(err, errlen, "a key is written without the leading \"--\" of its flag");
        return -EBADMSG;
    }
    char *k = s;
    /* a key starts with a letter or digit */
    while (config__is_key_char(*s) && (s > k || (*s != '.' && *s != '_' && *s != '-')))
        s++;
    if (s == k || (*s && !config__is_blank(*s))) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7F)
            snprintf(err, errlen, "'%c' where a key %s (a line is \"key value\")", c,
                     s == k ? "should start" : "character should be");
        else
            snprintf(err, errlen, "a non-ASCII character where a key %s",
                     s == k ? "should start" : "character should be");
        return -EBADMSG;
    }
    if (s - k > CONFIG__MAX_KEY) {
        snprintf(err, errlen, "key longer than %d bytes", CONFIG__MAX_KEY);
        return -EBADMSG;
    }
    char *key_end = s;
    while (config__is_blank(*s))
        s++;
    *key_end = 0;
    if (!*s || *s == '#') {
        snprintf(err, errlen, "%.200s: no value (write \"\" for an empty one)", k);
        return -EBADMSG;
    }
    char *v = s;
    if (*s == '"') {
        char *out = v;
        for (s++;; s++) {
            if (!*s) {
                snprintf(err, errlen, "%.200s: the quoted value has no closing '\"'", k);
                return -EBADMSG;
            }
            if (*s == '"')
                break;
            if (*s == '\\') {
                s++;
                if (*s != '"' && *s != '\\') {
                    snprintf(err, errlen, "%.200s: unknown escape in a quoted value (only \\\" "
                             "and \\\\)", k);
                    return -EBADMSG;
                }
            }
            *out++ = *s;
        }
        s++;
        while (config__is_blank(*s))
            s++;
        if (*s && *s != '#') {
            snprintf(err, errlen, "%.200s: text after the quoted value", k);
            return -EBADMSG;
        }
        *out = 0;
    } else {
        /* A '#' is a comment only after whitespace, so "pa#ss" stays whole. */
        while (*s && !(*s == '#' && config__is_blank(s[-1])))
            s++;
        while (s > v && config__is_blank(s[-1]))
            s--;
        *s = 0;
    }
    *key = k;
    *value = v;
    return 0;
}

/* ---- the file --------------------------------------------------------------------- */

int config_parse(const char *name, const char *text, size_t len, config_line_fn fn, void *ud,
                 char *err, size_t errlen)
{
    config__keys_t keys = { 0 };
    char line[CONFIG_MAX_LINE + 1];
    char why[1024];
    size_t pos = 0;
    int lineno = 0, rc = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3; /* a byte order mark, as some editors write */
    while (pos < len) {
        lineno++;
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && start[n - 1] == '\r')
            n--;
        rc = config__line_check((const unsigned char *)start, n, why, sizeof(why));
        if (rc)
            goto fail;
        memcpy(line, start, n);
        line[n] = 0;
        char *key, *value;
        rc = config__line_split(line, &key, &value, why, sizeof(why));
        if (rc)
            goto fail;
        if (!key)
            continue;
        rc = config__keys_add(&keys, key, lineno);
        if (rc < 0) {
            snprintf(why, sizeof(why), "out of memory");
            goto fail;
        }
        if (rc > 0) {
            snprintf(why, sizeof(why), "%.200s: set again (first set on line %d)", key, rc);
            rc = -EBADMSG;
            goto fail;
        }
        why[0] = 0;
        rc = fn(ud, name, lineno, key, value, why, sizeof(why));
        if (rc) {
            if (rc > 0)
                rc = -EINVAL;
            if (!why[0])
                snprintf(why, sizeof(why), "%.200s: refused", key);
            goto fail;
        }
    }
    config__keys_close(&keys);
    return 0;
fail:
    snprintf(err, errlen, "%s:%d: %s", name, lineno, why);
    config__keys_close(&keys);
    return rc;
}

int config_read_file(const char *path, config_line_fn fn, void *ud, char *err, size_t errlen)
{
    unsigned char *text;
    size_t len;
    int rc = fsutil_read_all(path, CONFIG_MAX_BYTES, &text, &len, err, errlen);
    if (rc)
        return rc;
    rc = config_parse(path, (const char *)text, len, fn, ud, err, errlen);
    free(text);
    return rc;
}
