/*
 * fuzz_config: io/config.h's reader on arbitrary file contents (a derrd.conf
 * is written by people and tools), and each setting it delivers through
 * daemon/options.c's options_set, which is what options_load_file does with
 * them. Checked besides "no crash, no sanitizer report":
 *   - every setting the reader delivers obeys the syntax of config.h: a key
 *     of [A-Za-z0-9][A-Za-z0-9._-]* up to 200 bytes, a value of strict UTF-8
 *     without controls but tab (an independent validator), line numbers
 *     increasing and inside the file, each key once;
 *   - an error is 0 / -EBADMSG with "NAME:LINE: reason" in printable ASCII,
 *     LINE past every delivered setting;
 *   - a callback's refusal stops the reader at that setting, its reason kept
 *     (a negative errno) or "KEY: refused" given (a positive return);
 *   - what options_set accepted, options_print_values prints as a file that
 *     reads back (config_parse + options_set) to the same printed values
 *     (unless a line would be too long or a value holds a tab, below).
 * kafka.* keys are not passed on: librdkafka would act on some of them
 * (plugin.library.paths loads a shared library), and they are its parser,
 * not derrd's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/options.h"
#include "io/config.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz.conf"

typedef struct {
    size_t max_line;    /* lines in the input */
    int n, last_line;   /* settings delivered so far, and the line of the last */
    char **keys;        /* (n) copies, for the once-only check */
    int stop_at;        /* refuse setting number stop_at (1-based); 0: never */
    int stop_positive;  /* refuse with 1 and no reason, not -EINVAL "stop" */
    int stop_line;      /* the line of the refused setting */
    options_t *opt;     /* when set, apply each setting (but kafka.*) */
    int opt_ok;         /* settings options_set took */
} fuzz_config_t;

static int fuzz_config_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return 0;
    }
    return 1;
}

static int fuzz_config_cb(void *ud, const char *file, int line, const char *key,
                          const char *value, char *err, size_t errlen)
{
    fuzz_config_t *c = ud;
    FUZZ_CHECK(strcmp(file, FUZZ_NAME) == 0);
    FUZZ_CHECK(line > c->last_line && (size_t)line <= c->max_line);
    FUZZ_CHECK(fuzz_config_key_ok(key));
    size_t vlen = strlen(value);
    FUZZ_CHECK(vlen <= CONFIG_MAX_LINE);
    FUZZ_CHECK(fuzz_utf8_ok((const unsigned char *)value, vlen, 0, 1));
    FUZZ_CHECK(errlen > 0);
    memset(err, 'x', errlen); /* the whole buffer is the callback's to write */
    err[0] = '\0';
    c->last_line = line;
    c->n++;
    char **keys = realloc(c->keys, (size_t)c->n * sizeof(*keys));
    FUZZ_CHECK(keys != NULL);
    c->keys = keys;
    FUZZ_CHECK((keys[c->n - 1] = strdup(key)) != NULL);
    if (c->n == c->stop_at) {
        c->stop_line = line;
        if (c->stop_positive)
            return 1;
        snprintf(err, errlen, "stop");
        return -EINVAL;
    }
    if (c->opt && strncmp(key, "kafka.", 6) != 0) {
        char why[1024];
        int rc = options_set(c->opt, key, value, why, sizeof(why));
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOENT || rc == -ENOMEM);
        if (rc)
            FUZZ_CHECK(why[0] != '\0' && memchr(why, 0, sizeof(why)));
        else
            c->opt_ok++;
    }
    return 0;
}

static int fuzz_config_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void fuzz_config_close(fuzz_config_t *c)
{
    for (int k = 0; k < c->n; k++)
        free(c->keys[k]);
    free(c->keys);
    c->keys = NULL;
    c->n = 0;
}

/* One parse of text with c; checks the outcome. Returns the reader's rc. */
static int fuzz_config_run(const char *text, size_t len, fuzz_config_t *c, char *err,
                           size_t errlen)
{
    c->last_line = 0;
    memset(err, 0x55, errlen);
    int rc = config_parse(FUZZ_NAME, text, len, fuzz_config_cb, c, err, errlen);
    if (c->n > 1) { /* each key once */
        qsort(c->keys, (size_t)c->n, sizeof(*c->keys), fuzz_config_cmp);
        for (int k = 1; k < c->n; k++)
            FUZZ_CHECK(strcmp(c->keys[k - 1], c->keys[k]) != 0);
    }
    if (rc == 0)
        return 0;
    FUZZ_CHECK(fuzz_printable(err, errlen));
    FUZZ_CHECK(strncmp(err, FUZZ_NAME ":", sizeof(FUZZ_NAME)) == 0);
    char *end;
    long line = strtol(err + sizeof(FUZZ_NAME), &end, 10);
    FUZZ_CHECK(end > err + sizeof(FUZZ_NAME) && end[0] == ':' && end[1] == ' ' && end[2]);
    FUZZ_CHECK(line >= 1 && (size_t)line <= c->max_line);
    if (c->stop_at && c->n == c->stop_at) {
        FUZZ_CHECK(line == c->stop_line);
        FUZZ_CHECK(rc == -EINVAL);
        if (!c->stop_positive)
            FUZZ_CHECK(strcmp(end, ": stop") == 0);
        else
            FUZZ_CHECK(strlen(end) > 9 && strcmp(end + strlen(end) - 9, ": refused") == 0);
    } else {
        FUZZ_CHECK(rc == -EBADMSG);
        FUZZ_CHECK(line > c->last_line);
    }
    return rc;
}

static char *fuzz_config_print(const options_t *o, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    FUZZ_CHECK(f != NULL);
    options_print_values(o, f);
    FUZZ_CHECK(fclose(f) == 0);
    return text;
}

/* The longest line of text[0..len). */
static size_t fuzz_config_longest(const char *text, size_t len)
{
    size_t longest = 0, at = 0;
    while (at < len) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - text - at) : len - at;
        if (n > longest)
            longest = n;
        at += n + 1;
    }
    return longest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    fuzz_config_t c = { 0 };
    c.max_line = 1;
    for (size_t i = 0; i < size; i++)
        c.max_line += data[i] == '\n';
    char err[512];

    /* 1: every setting accepted by the callback, applied to options. */
    options_t o;
    FUZZ_CHECK(options_init(&o) == 0);
    c.opt = &o;
    int rc = fuzz_config_run(text, size, &c, err, sizeof(err));
    int n = c.n, applied = c.opt_ok;
    fuzz_config_close(&c);
    c.opt = NULL;

    /* 2: the callback refuses the middle setting. */
    if (n > 0) {
        c.stop_at = n / 2 + 1;
        c.stop_positive = (int)(size & 1);
        FUZZ_CHECK(fuzz_config_run(text, size, &c, err, sizeof(err)) == -EINVAL);
        FUZZ_CHECK(c.n == c.stop_at);
        fuzz_config_close(&c);
        c.stop_at = 0;
    }

    /* 3: a tiny error buffer still gets a NUL-terminated prefix. */
    if (rc) {
        char small[6];
        c.last_line = 0;
        FUZZ_CHECK(config_parse(FUZZ_NAME, text, size, fuzz_config_cb, &c, small,
                                sizeof(small)) == rc);
        FUZZ_CHECK(memchr(small, 0, sizeof(small)) && strncmp(small, err, strlen(small)) == 0);
        fuzz_config_close(&c);
    }

    /* 4: the values in effect print as a file that reads back the same
     * (for a file that read without error: this costs ten parses). */
    if (applied && rc == 0) {
        size_t len, len2;
        char *printed = fuzz_config_print(&o, &len);
        options_t back;
        FUZZ_CHECK(options_init(&back) == 0);
        /* Not compared: a value near CONFIG_MAX_LINE may print longer once
         * quoted, and options_print_values does not show a value with a
         * control character (a tab is one the syntax allows). */
        if (fuzz_config_longest(printed, len) <= CONFIG_MAX_LINE &&
            !strstr(printed, "<not shown: control characters>")) {
            fuzz_config_t c2 = { 0 };
            c2.max_line = (size_t)-1;
            c2.opt = &back;
            int rc2 = config_parse(FUZZ_NAME, printed, len, fuzz_config_cb, &c2, err,
                                   sizeof(err));
            if (rc2)
                fprintf(stderr, "printed values do not read back: %s\n%s", err, printed);
            FUZZ_CHECK(rc2 == 0);
            FUZZ_CHECK(c2.opt_ok == c2.n);
            fuzz_config_close(&c2);
            char *again = fuzz_config_print(&back, &len2);
            if (len2 != len || memcmp(printed, again, len) != 0)
                fprintf(stderr, "printed values change on reading back:\n%s---\n%s", printed,
                        again);
            FUZZ_CHECK(len2 == len && memcmp(printed, again, len) == 0);
            free(again);
        }
        options_close(&back);
        free(printed);
    }
    options_close(&o);
    return 0;
}
