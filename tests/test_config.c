/*
 * Tests of the configuration file: the io/config reader (syntax, every
 * error with its line, limits, random input that must never crash it) and
 * the option table read through it (options_load_file, the example file
 * that --dump-config prints, the values --print-config prints).
 *
 * Every test that needs files works in its own mkdtemp directory under /tmp
 * and removes it. Under AddressSanitizer the tests that feed bad input run
 * a leak check before they end (the runner's children leave with _exit()).
 */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/options.h"
#include "io/config.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define CONFIG_TEST_LEAK_CHECK() CHECK(__lsan_do_recoverable_leak_check() == 0)
#else
#define CONFIG_TEST_LEAK_CHECK() ((void)0)
#endif

/* ---- helpers ------------------------------------------------------------- */

/* What the reader handed over: "line:key=value;" per setting. */
typedef struct {
    char text[8192];
    int calls;
    int stop_at; /* line whose callback fails (0 = none) */
    int positive; /* the failing callback returns 1 with no reason */
} config_test_seen_t;

static int config_test_cb(void *ud, const char *file, int line, const char *key,
                          const char *value, char *err, size_t errlen)
{
    config_test_seen_t *s = ud;
    (void)file;
    s->calls++;
    if (line == s->stop_at) {
        if (s->positive)
            return 1;
        snprintf(err, errlen, "%s: refused by the test", key);
        return -EINVAL;
    }
    size_t n = strlen(s->text);
    snprintf(s->text + n, sizeof(s->text) - n, "%d:%s=%s;", line, key, value);
    return 0;
}

/* Parses len bytes of text as "t.conf"; returns the reader's result. */
static int config_test_parse(const char *text, size_t len, config_test_seen_t *s, char *err,
                             size_t errlen)
{
    memset(s, 0, sizeof(*s));
    err[0] = 0;
    return config_parse("t.conf", text, len, config_test_cb, s, err, errlen);
}

static char *config_test_dir_new(void)
{
    char *dir = strdup("/tmp/derrd-test-config-XXXXXX");
    if (dir && !mkdtemp(dir)) {
        free(dir);
        dir = NULL;
    }
    return dir;
}

static int config_test_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void config_test_dir_free(char *dir)
{
    if (!dir)
        return;
    CHECK(nftw(dir, config_test_rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
    free(dir);
}

/* Writes len bytes to dir/name; the path goes to path. Returns 0 or -1. */
static int config_test_write(const char *dir, const char *name, const void *data, size_t len,
                             char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = fwrite(data, 1, len, f);
    return fclose(f) == 0 && put == len ? 0 : -1;
}

/* The text a printing function writes; caller frees. */
static char *config_test_print_values(const options_t *o)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    options_print_values(o, f);
    fclose(f);
    return text;
}

static char *config_test_print_example(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    options_print_example(f);
    fclose(f);
    return text;
}

/* ---- io/config: syntax ------------------------------------------------------ */

TEST(config_syntax)
{
    static const char text[] =
        "\xEF\xBB\xBF# a comment\n"
        "\n"
        "   \t  \n"
        "  # an indented comment\n"
        "brokers 10.0.0.1:9092,10.0.0.2:9092\n"
        "\ttopic\t events  \t\n"
        "group derrd # trailing comment\n"
        "kafka.sasl.password pa#ss\n"
        "quoted \"  two  spaces # kept  \"\n"
        "escaped \"say \\\"hi\\\" \\\\o/\" # comment\n"
        "empty \"\"\n"
        "inner a b\tc\n"
        "crlf yes\r\n"
        "utf8 caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\n"
        "quote_inside a\"b\n"
        "last no-newline";
    config_test_seen_t s;
    char err[512];
    CHECK_EQ_INT(config_test_parse(text, sizeof(text) - 1, &s, err, sizeof(err)), 0);
    static const char want[] = "5:brokers=10.0.0.1:9092,10.0.0.2:9092;"
                               "6:topic=events;"
                               "7:group=derrd;"
                               "8:kafka.sasl.password=pa#ss;"
                               "9:quoted=  two  spaces # kept  ;"
                               "10:escaped=say \"hi\" \\o/;"
                               "11:empty=;"
                               "12:inner=a b\tc;"
                               "13:crlf=yes;"
                               "14:utf8=caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80;"
                               "15:quote_inside=a\"b;"
                               "16:last=no-newline;";
    if (strcmp(s.text, want) != 0)
        test_fail(__FILE__, __LINE__, "got \"%s\"", s.text);
    CHECK_EQ_INT(s.calls, 12);

    /* nothing at all, and only comments, are fine */
    CHECK_EQ_INT(config_test_parse("", 0, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(s.calls, 0);
    CHECK_EQ_INT(config_test_parse("# x\n\n", 5, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(s.calls, 0);
}

/* Each malformed input fails with the reader's error at the right line. */
TEST(config_errors_name_the_line)
{
    static const struct {
        const char *text;
        size_t len; /* 0 = strlen */
        const char *err;
    } cases[] = {
        { "a 1\nb\n", 0, "t.conf:2: b: no value (write \"\" for an empty one)" },
        { "a 1\nb   # only a comment\n", 0, "t.conf:2: b: no value" },
        { "a 1\n\n# c\na 2\n", 0, "t.conf:4: a: set again (first set on line 1)" },
        { "a=1\n", 0, "t.conf:1: '=' where a key character should be" },
        { "x 1\n\"a\" 1\n", 0, "t.conf:2: '\"' where a key should start" },
        { "--brokers x\n", 0, "t.conf:1: a key is written without the leading \"--\"" },
        { "-x 1\n", 0, "t.conf:1: '-' where a key should start" },
        { ".x 1\n", 0, "t.conf:1: '.' where a key should start" },
        { "\xC3\xA9 1\n", 0, "t.conf:1: a non-ASCII character where a key should start" },
        { "a \"x\n", 0, "t.conf:1: a: the quoted value has no closing '\"'" },
        { "a \"x\\\"\n", 0, "t.conf:1: a: the quoted value has no closing" },
        { "a \"x\" y\n", 0, "t.conf:1: a: text after the quoted value" },
        { "a \"x\\n\"\n", 0, "t.conf:1: a: unknown escape" },
        { "a \"x\\", 0, "t.conf:1: a: unknown escape" },
        { "a x\0y\n", 6, "t.conf:1: NUL byte in column 4" },
        { "a 1\na \x01\n", 0, "t.conf:2: control character 0x01 in column 3" },
        { "a x\ry\n", 0, "t.conf:1: control character 0x0D in column 4" },
        { "a x\x7F\n", 0, "t.conf:1: control character 0x7F in column 4" },
        { "a x\x1B[31m\n", 0, "t.conf:1: control character 0x1B in column 4" },
        { "a \xC0\xAF\n", 0, "t.conf:1: invalid UTF-8 in column 3" },
        { "a \xED\xA0\x80\n", 0, "t.conf:1: invalid UTF-8 in column 3" },
        { "a \xF4\x90\x80\x80\n", 0, "t.conf:1: invalid UTF-8 in column 3" },
        { "a b\xE2\x82\n", 0, "t.conf:1: invalid UTF-8 in column 4" },
        { "a b\xE2\x82", 0, "t.conf:1: invalid UTF-8 in column 4" },
        { "a \xFF\n", 0, "t.conf:1: invalid UTF-8 in column 3" },
        { "a \x80\n", 0, "t.conf:1: invalid UTF-8 in column 3" },
        { "\n\n\xEF\xBB\xBF" "a 1\n", 0, "t.conf:3: a non-ASCII character" },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        config_test_seen_t s;
        char err[512];
        size_t len = cases[k].len ? cases[k].len : strlen(cases[k].text);
        int rc = config_test_parse(cases[k].text, len, &s, err, sizeof(err));
        CHECK(rc == -EBADMSG);
        if (strncmp(err, cases[k].err, strlen(cases[k].err)) != 0)
            test_fail(__FILE__, __LINE__, "case %zu: got \"%s\", want \"%s...\"", k, err,
                      cases[k].err);
    }
    CONFIG_TEST_LEAK_CHECK();
}

TEST(config_limits)
{
    config_test_seen_t s;
    char err[512];
    /* a line of exactly CONFIG_MAX_LINE bytes is fine, one more is not */
    char *text = malloc(2 * CONFIG_MAX_LINE + 16);
    REQUIRE(text);
    memcpy(text, "k ", 2);
    memset(text + 2, 'v', CONFIG_MAX_LINE - 2);
    memcpy(text + CONFIG_MAX_LINE, "\r\n", 2);
    CHECK_EQ_INT(config_test_parse(text, CONFIG_MAX_LINE + 2, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(s.calls, 1);
    memcpy(text + CONFIG_MAX_LINE, "vv\n", 3);
    CHECK_EQ_INT(config_test_parse(text, CONFIG_MAX_LINE + 3, &s, err, sizeof(err)), -EBADMSG);
    CHECK(strcmp(err, "t.conf:1: line longer than 4096 bytes") == 0);
    /* keys up to 200 bytes */
    memset(text, 'k', 200);
    memcpy(text + 200, " v\n", 3);
    CHECK_EQ_INT(config_test_parse(text, 203, &s, err, sizeof(err)), 0);
    memset(text, 'k', 201);
    memcpy(text + 201, " v\n", 3);
    CHECK_EQ_INT(config_test_parse(text, 204, &s, err, sizeof(err)), -EBADMSG);
    CHECK(strcmp(err, "t.conf:1: key longer than 200 bytes") == 0);
    free(text);
}

/* The set of keys seen grows past its first size; a late duplicate still
 * names the first line. */
TEST(config_many_keys)
{
    enum { N = 20000 };
    char *text = malloc((size_t)N * 24 + 64);
    REQUIRE(text);
    size_t len = 0;
    for (int k = 0; k < N; k++)
        len += (size_t)sprintf(text + len, "key.%d %d\n", k, k);
    config_test_seen_t s;
    char err[512];
    memset(&s, 0, sizeof(s));
    s.text[0] = 0;
    CHECK_EQ_INT(config_parse("t.conf", text, len, config_test_cb, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(s.calls, N);
    len += (size_t)sprintf(text + len, "key.%d again\n", N / 3);
    memset(&s, 0, sizeof(s));
    CHECK_EQ_INT(config_parse("t.conf", text, len, config_test_cb, &s, err, sizeof(err)),
                 -EBADMSG);
    char want[128];
    snprintf(want, sizeof(want), "t.conf:%d: key.%d: set again (first set on line %d)", N + 1,
             N / 3, N / 3 + 1);
    CHECK(strcmp(err, want) == 0);
    free(text);
    CONFIG_TEST_LEAK_CHECK();
}

TEST(config_callback_error)
{
    static const char text[] = "a 1\nb 2\n# c\nc 3\nd 4\n";
    config_test_seen_t s;
    char err[512];
    memset(&s, 0, sizeof(s));
    s.stop_at = 4;
    CHECK_EQ_INT(config_parse("t.conf", text, strlen(text), config_test_cb, &s, err,
                              sizeof(err)), -EINVAL);
    CHECK(strcmp(err, "t.conf:4: c: refused by the test") == 0);
    CHECK_EQ_INT(s.calls, 3); /* d is never handed over */
    CHECK(strcmp(s.text, "1:a=1;2:b=2;") == 0);
    /* a callback that returns a positive number and no reason */
    memset(&s, 0, sizeof(s));
    s.stop_at = 2;
    s.positive = 1;
    CHECK_EQ_INT(config_parse("t.conf", text, strlen(text), config_test_cb, &s, err,
                              sizeof(err)), -EINVAL);
    CHECK(strcmp(err, "t.conf:2: b: refused") == 0);
}

TEST(config_read_file)
{
    char *dir = config_test_dir_new();
    REQUIRE(dir);
    char path[512], err[512];
    config_test_seen_t s;
    memset(&s, 0, sizeof(s));
    CHECK(config_test_write(dir, "ok.conf", "a 1\nb \"2\"\n", 10, path, sizeof(path)) == 0);
    CHECK_EQ_INT(config_read_file(path, config_test_cb, &s, err, sizeof(err)), 0);
    CHECK(strcmp(s.text, "1:a=1;2:b=2;") == 0);

    /* errors name the file as it was given */
    CHECK(config_test_write(dir, "bad.conf", "a 1\nb\n", 6, path, sizeof(path)) == 0);
    CHECK_EQ_INT(config_read_file(path, config_test_cb, &s, err, sizeof(err)), -EBADMSG);
    char want[600];
    snprintf(want, sizeof(want), "%s:2: b: no value", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);

    snprintf(path, sizeof(path), "%s/missing.conf", dir);
    CHECK_EQ_INT(config_read_file(path, config_test_cb, &s, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    CHECK(strcmp(err, want) == 0);

    CHECK(config_read_file(dir, config_test_cb, &s, err, sizeof(err)) < 0);
    CHECK(strstr(err, dir) == err);

    /* over the size limit, even when every line is a comment */
    size_t big = CONFIG_MAX_BYTES + 1;
    char *text = malloc(big);
    REQUIRE(text);
    memset(text, '#', big);
    for (size_t k = 79; k < big; k += 80)
        text[k] = '\n';
    CHECK(config_test_write(dir, "big.conf", text, big, path, sizeof(path)) == 0);
    memset(&s, 0, sizeof(s));
    CHECK_EQ_INT(config_read_file(path, config_test_cb, &s, err, sizeof(err)), -EFBIG);
    CHECK(strstr(err, "over the limit") != NULL);
    CHECK(config_test_write(dir, "max.conf", text, big - 1, path, sizeof(path)) == 0);
    CHECK_EQ_INT(config_read_file(path, config_test_cb, &s, err, sizeof(err)), 0);
    free(text);
    config_test_dir_free(dir);
    CONFIG_TEST_LEAK_CHECK();
}

/* Random bytes, random mixes of the syntax's own characters, and random
 * well-formed lines with a byte changed now and then: the reader returns 0
 * or an error naming "t.conf:LINE:", and never crashes (run it under ASan). */
static uint64_t config_test_next(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x >> 16;
}

TEST(config_random_input)
{
    static const char alphabet[] = "ab.-_ \t\t#\"\\\n\n\r\0\x01\x7F\xC3\xA9\xE2\x82\xAC\xF0\xFF";
    static const char *const keys[] = { "brokers", "kafka.sasl.password", "k_", "a-b.c", "9" };
    static const char *const gaps[] = { " ", "\t", " \t ", "  " };
    static const char *const values[] = { "v", "\"q # q\"", "x#y", "x # c", "\"\\\"\"",
                                          "caf\xC3\xA9", "\"\"", "a b", "1", "\"open" };
    static const char *const ends[] = { "\n", "\r\n", "\n\n# c\n", "\n  \n" };
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char text[1200];
    int ok = 0, failed = 0;
    for (int round = 0; round < 30000; round++) {
        size_t len = 0, n = (size_t)(config_test_next(&x) % 600);
        if (round % 3 == 0) {
            for (; len < n; len++)
                text[len] = (char)config_test_next(&x);
        } else if (round % 3 == 1) {
            for (; len < n; len++)
                text[len] = alphabet[config_test_next(&x) % (sizeof(alphabet) - 1)];
        } else {
            for (int line = 0; len < n; line++)
                len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%d%s%s%s",
                                        keys[config_test_next(&x) % 5], line,
                                        gaps[config_test_next(&x) % 4],
                                        values[config_test_next(&x) % (line % 16 ? 9 : 10)],
                                        ends[config_test_next(&x) % 4]);
            if (len > 0 && config_test_next(&x) % 4 == 0)
                text[config_test_next(&x) % len] = (char)config_test_next(&x);
        }
        config_test_seen_t s;
        char err[512];
        int rc = config_test_parse(text, len, &s, err, sizeof(err));
        if (rc == 0) {
            ok++;
        } else {
            failed++;
            if (rc > 0 || strncmp(err, "t.conf:", 7) != 0) {
                test_fail(__FILE__, __LINE__, "round %d: rc %d, err \"%s\"", round, rc, err);
                break;
            }
        }
    }
    CHECK(ok > 500);
    CHECK(failed > 500);
    CONFIG_TEST_LEAK_CHECK();
}

/* ---- options through the file --------------------------------------------- */

TEST(options_load_file_sets_values)
{
    char *dir = config_test_dir_new();
    REQUIRE(dir);
    static const char text[] = "# derrd\n"
                               "brokers 10.0.0.1:9092\n"
                               "topic \"my events\"\n"
                               "http-token s3cr3t\n"
                               "http-port 0\n"
                               "lambda-de 0.5\n"
                               "embedded-kafka yes\n"
                               "log-level debug\n"
                               "http-address ::1\n"
                               "kafka.client.id derrd-test\n"
                               "kafka.sasl.password hunter2\n";
    char path[512], err[512];
    CHECK(config_test_write(dir, "d.conf", text, strlen(text), path, sizeof(path)) == 0);
    options_t o;
    REQUIRE(options_init(&o) == 0);
    CHECK_EQ_INT(options_load_file(&o, path, err, sizeof(err)), 0);
    CHECK(strcmp(o.brokers, "10.0.0.1:9092") == 0);
    CHECK(strcmp(o.topic, "my events") == 0);
    CHECK(strcmp(o.http_token, "s3cr3t") == 0);
    CHECK(strcmp(o.http_address, "::1") == 0);
    CHECK_EQ_INT(o.http_port, 0);
    CHECK_NEAR(o.lambda_de, 0.5, 0);
    CHECK_EQ_INT(o.embedded_kafka, 1);
    CHECK(strcmp(o.group, "derrd") == 0); /* untouched: the default */
    CHECK(strcmp(kafka_config_get(o.kafka, "client.id"), "derrd-test") == 0);
    CHECK(strcmp(kafka_config_get(o.kafka, "sasl.password"), "hunter2") == 0);

    /* a flag applied after the file wins */
    CHECK_EQ_INT(options_set(&o, "topic", "flagged", err, sizeof(err)), 0);
    CHECK(strcmp(o.topic, "flagged") == 0);

    char *values = config_test_print_values(&o);
    REQUIRE(values);
    CHECK(strstr(values, "\ntopic flagged\n") != NULL);
    CHECK(strstr(values, "\nhttp-token <set>\n") != NULL);
    CHECK(strstr(values, "\nkafka.client.id derrd-test\n") != NULL);
    CHECK(strstr(values, "\nkafka.sasl.password <set>\n") != NULL);
    CHECK(strstr(values, "s3cr3t") == NULL);
    CHECK(strstr(values, "hunter2") == NULL);
    free(values);
    options_close(&o);
    config_test_dir_free(dir);
}

/* Each bad file fails with "PATH:LINE: key: reason", exactly. */
TEST(options_load_file_errors)
{
    static const struct {
        const char *text, *err;
    } cases[] = {
        { "brokers a\nhttp-port 99999\n", ":2: http-port: 99999 is outside [0, 65535]" },
        { "http-port 80x\n", ":1: http-port: \"80x\" is not an integer" },
        { "gate-margin 1.5\n", ":1: gate-margin: 1.5 is outside [0, 1]" },
        { "gate-margin nan\n", ":1: gate-margin: \"nan\" is not a number" },
        { "rounds maybe\n", ":1: rounds: \"maybe\" is not a boolean (true/false)" },
        { "log-level loud\n", ":1: log-level: \"loud\" is not one of err, warning, notice, "
                              "info, debug" },
        { "topic \"\"\n", ":1: topic: must not be empty" },
        { "http-address localhost\n", ":1: http-address: \"localhost\" is not a numeric IPv4 "
                                      "or IPv6 address" },
        { "\n\nfrobnicate 1\n", ":3: frobnicate: unknown option (derrd --help lists them)" },
        { "config /etc/other.conf\n", ":1: config: unknown option" },
        { "kafka.no.such.property 1\n", ":1: kafka.no.such.property: No such configuration "
                                        "property: \"no.such.property\"" },
        { "kafka.security.protocol carrier-pigeon\n", ":1: kafka.security.protocol: Invalid "
                                                      "value" },
        { "kafka.group.id other\n", ":1: kafka.group.id: not settable: derrd sets it "
                                     "(--group)" },
        { "kafka.enable.auto.offset.store true\n", ":1: kafka.enable.auto.offset.store: not "
                                                   "settable: derrd stores offsets itself" },
        { "kafka.partition.assignment.strategy range,cooperative-sticky\n",
          ":1: kafka.partition.assignment.strategy: not settable: derrd's rebalance handling "
          "is eager" },
        { "topic a\ntopic b\n", ":2: topic: set again (first set on line 1)" },
        { "brokers\n", ":1: brokers: no value" },
    };
    char *dir = config_test_dir_new();
    REQUIRE(dir);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char path[512], err[1024], want[1024];
        CHECK(config_test_write(dir, "bad.conf", cases[k].text, strlen(cases[k].text), path,
                                sizeof(path)) == 0);
        options_t o;
        REQUIRE(options_init(&o) == 0);
        CHECK(options_load_file(&o, path, err, sizeof(err)) < 0);
        snprintf(want, sizeof(want), "%s%s", path, cases[k].err);
        if (strncmp(err, want, strlen(want)) != 0)
            test_fail(__FILE__, __LINE__, "case %zu: got \"%s\", want \"%s...\"", k, err, want);
        options_close(&o);
    }
    config_test_dir_free(dir);
    CONFIG_TEST_LEAK_CHECK();
}

/* options_set's reasons leave the name to the caller. */
TEST(options_set_reasons)
{
    options_t o;
    REQUIRE(options_init(&o) == 0);
    char err[512];
    CHECK_EQ_INT(options_set(&o, "http-port", "x", err, sizeof(err)), -EINVAL);
    CHECK(strcmp(err, "\"x\" is not an integer") == 0);
    CHECK_EQ_INT(options_set(&o, "nope", "x", err, sizeof(err)), -ENOENT);
    CHECK(strcmp(err, "unknown option (derrd --help lists them)") == 0);
    CHECK(options_set(&o, "kafka.nope", "x", err, sizeof(err)) < 0);
    CHECK(strstr(err, "No such configuration property") != NULL);
    CHECK(options_is_known("kafka.anything"));
    CHECK(options_is_known("gate-margin"));
    CHECK(!options_is_known("gate"));
    CHECK(!options_is_known("config"));
    CHECK(options_is_bool("rounds"));
    CHECK(!options_is_bool("topic"));
    options_close(&o);
}

/* HTTP is on by default on 8417; http-port 0 asks for a port the kernel
 * picks (it no longer means "no HTTP": http false does). */
TEST(options_http_switch_and_port_zero)
{
    options_t o;
    REQUIRE(options_init(&o) == 0);
    char err[512];
    CHECK_EQ_INT(o.http, 1);
    CHECK_EQ_INT(o.http_port, 8417);
    CHECK(options_is_bool("http"));
    CHECK_EQ_INT(options_set(&o, "http-port", "0", err, sizeof(err)), 0);
    CHECK_EQ_INT(o.http_port, 0);
    CHECK_EQ_INT(o.http, 1);
    CHECK_EQ_INT(options_set(&o, "http-port", "-1", err, sizeof(err)), -EINVAL);
    CHECK_EQ_INT(options_set(&o, "http", "false", err, sizeof(err)), 0);
    CHECK_EQ_INT(o.http, 0);
    char *values = config_test_print_values(&o);
    REQUIRE(values);
    CHECK(strstr(values, "\nhttp false\n") != NULL);
    CHECK(strstr(values, "\nhttp-port 0\n") != NULL);
    free(values);
    options_close(&o);
}

/* What --print-config prints reads back as the same values, awkward text
 * included. */
TEST(options_print_values_round_trip)
{
    char *dir = config_test_dir_new();
    REQUIRE(dir);
    options_t o, back;
    REQUIRE(options_init(&o) == 0);
    REQUIRE(options_init(&back) == 0);
    char err[512], path[512];
    CHECK_EQ_INT(options_set(&o, "teacher-file", " a b#c \"d\" \\e #f ", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "dead-letter-topic", "dlq#1", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "lambda-rrd", "0.1", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "teacher-refresh-growth", "1e-7", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "gate-margin", "0.3333333333333333", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "kafka.client.id", "id with spaces", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "kafka.client.id", "id again", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&o, "kafka.socket.timeout.ms", "1234", err, sizeof(err)), 0);
    char *text = config_test_print_values(&o);
    REQUIRE(text);
    CHECK(strstr(text, "\nkafka.client.id \"id again\"\nkafka.socket.timeout.ms 1234\n"));
    CHECK(strstr(text, "\nlambda-rrd 0.1\n"));
    CHECK(config_test_write(dir, "values.conf", text, strlen(text), path, sizeof(path)) == 0);
    CHECK_EQ_INT(options_load_file(&back, path, err, sizeof(err)), 0);
    CHECK(strcmp(back.teacher_file, o.teacher_file) == 0);
    CHECK(strcmp(back.dead_letter_topic, "dlq#1") == 0);
    CHECK(back.gate_margin == o.gate_margin);
    CHECK(back.teacher_refresh_growth == o.teacher_refresh_growth);
    char *again = config_test_print_values(&back);
    REQUIRE(again);
    CHECK(strcmp(text, again) == 0);
    free(again);
    free(text);
    options_close(&back);
    options_close(&o);
    config_test_dir_free(dir);
}

/* options_changes: what a reload (SIGHUP) logs. */
typedef struct {
    char log[2048];
    int n;
} config_test_changes_t;

static void config_test_change(void *ud, const char *name, const char *before,
                               const char *after)
{
    config_test_changes_t *c = ud;
    size_t used = strlen(c->log);
    snprintf(c->log + used, sizeof(c->log) - used, "%s|%s|%s\n", name, before ? before : "-",
             after ? after : "-");
    c->n++;
}

/* A reload names every changed setting, and shows no secret. Before, the
 * texts compared were --print-config's, line by line: a new http-token or
 * Kafka password (both "<set>") was no change at all ("0 at the next
 * start" after a token rotation), and a kafka.* property added or removed
 * went unnamed or shifted the lines so another was named instead. */
TEST(options_changes_name_every_changed_setting)
{
    options_t a, b;
    REQUIRE(options_init(&a) == 0);
    REQUIRE(options_init(&b) == 0);
    char err[512];
    CHECK_EQ_INT(options_set(&a, "http-token", "old-token", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&a, "kafka.client.id", "one", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&a, "kafka.sasl.password", "old-pw", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&a, "kafka.socket.timeout.ms", "1000", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&b, "http-token", "new-token", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&b, "kafka.sasl.password", "new-pw", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&b, "kafka.socket.timeout.ms", "1000", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&b, "kafka.security.protocol", "SASL_SSL", err, sizeof(err)), 0);
    CHECK_EQ_INT(options_set(&b, "gate-margin", "0.05", err, sizeof(err)), 0);
    char *ta = options_compare_text(&a), *tb = options_compare_text(&b);
    REQUIRE(ta && tb);
    config_test_changes_t c = { "", 0 };
    options_changes(ta, tb, config_test_change, &c);
    static const char *const want[] = {
        "gate-margin|gate-margin 0.02|gate-margin 0.05\n",
        "http-token|http-token <set>|http-token <set>\n",
        "kafka.sasl.password|kafka.sasl.password <set>|kafka.sasl.password <set>\n",
        "kafka.security.protocol|-|kafka.security.protocol SASL_SSL\n",
        "kafka.client.id|kafka.client.id one|-\n",
    };
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
        if (!strstr(c.log, want[k]))
            test_fail(__FILE__, __LINE__, "no \"%.*s\" in:\n%s", (int)strlen(want[k]) - 1,
                      want[k], c.log);
    CHECK_EQ_INT(c.n, 5);
    CHECK(!strstr(c.log, "old-") && !strstr(c.log, "new-"));
    /* the same settings: nothing; a secret emptied is shown as empty */
    c = (config_test_changes_t){ "", 0 };
    options_changes(ta, ta, config_test_change, &c);
    CHECK_EQ_INT(c.n, 0);
    CHECK_EQ_INT(options_set(&b, "http-token", "", err, sizeof(err)), 0);
    free(tb);
    tb = options_compare_text(&b);
    REQUIRE(tb);
    c = (config_test_changes_t){ "", 0 };
    options_changes(ta, tb, config_test_change, &c);
    CHECK(strstr(c.log, "http-token|http-token <set>|http-token \"\"\n") != NULL);
    /* what is shown stays what --print-config shows */
    char *shown = config_test_print_values(&a);
    REQUIRE(shown);
    CHECK(strstr(shown, "old-") == NULL);
    free(shown);
    free(ta);
    free(tb);
    options_close(&a);
    options_close(&b);
}

/* The example file: stable, 78 columns, every option once as a commented
 * default; uncommenting all of them gives the defaults. */
TEST(options_example_is_the_defaults)
{
    char *dir = config_test_dir_new();
    REQUIRE(dir);
    char *ex = config_test_print_example(), *ex2 = config_test_print_example();
    REQUIRE(ex && ex2);
    CHECK(strcmp(ex, ex2) == 0);
    options_t def, loaded;
    REQUIRE(options_init(&def) == 0);
    REQUIRE(options_init(&loaded) == 0);
    char *want = config_test_print_values(&def);
    REQUIRE(want);
    int n_options = -1; /* the header line */
    for (const char *c = want; *c; c++)
        n_options += *c == '\n';

    /* "# name value" followed by a blank line or the end: a setting */
    size_t len = strlen(ex);
    char *out = malloc(len + 1);
    REQUIRE(out);
    size_t o = 0;
    int uncommented = 0;
    for (const char *line = ex; *line;) {
        const char *nl = strchr(line, '\n');
        REQUIRE(nl); /* every line ends in \n */
        size_t n = (size_t)(nl - line);
        CHECK(n <= 78);
        char name[128] = "";
        sscanf(line, "# %127[a-z0-9.-] ", name);
        int setting = (nl[1] == '\n' || nl[1] == 0) && name[0] && options_is_known(name) &&
                      strncmp(name, "kafka.", 6) != 0;
        if (setting) {
            line += 2, n -= 2;
            uncommented++;
        }
        memcpy(out + o, line, n + 1);
        o += n + 1;
        line += n + 1;
    }
    out[o] = 0;
    CHECK_EQ_INT(uncommented, n_options);
    char path[512], err[512];
    CHECK(config_test_write(dir, "example.conf", out, o, path, sizeof(path)) == 0);
    CHECK_EQ_INT(options_load_file(&loaded, path, err, sizeof(err)), 0);
    char *got = config_test_print_values(&loaded);
    REQUIRE(got);
    CHECK(strcmp(got, want) == 0);
    /* and the example itself, all commented, loads to the defaults too */
    CHECK(config_test_write(dir, "as-is.conf", ex, len, path, sizeof(path)) == 0);
    CHECK_EQ_INT(options_load_file(&loaded, path, err, sizeof(err)), 0);
    CHECK(strstr(ex, "# kafka.security.protocol SASL_SSL\n") != NULL);
    free(got);
    free(out);
    free(want);
    free(ex);
    free(ex2);
    options_close(&loaded);
    options_close(&def);
    config_test_dir_free(dir);
}
