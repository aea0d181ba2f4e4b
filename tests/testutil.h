/*
 * testutil: what several test files need besides the harness: a temporary
 * directory removed after the test, and running one of the project's tools
 * (built beside the test binary) with its output captured.
 */
#ifndef DERRD_TESTUTIL_H
#define DERRD_TESTUTIL_H

#include <stddef.h>
#include <sys/resource.h>

/* A fresh directory /tmp/derrd-test-<tag>-XXXXXX (malloc'd), or NULL. */
char *test_tmpdir_new(const char *tag);
/* Removes dir and everything in it (a failure is a test failure), frees it. */
void test_tmpdir_free(char *dir);
/* Runs body in a fresh temporary directory and removes it afterwards, also
 * when body returns early from a failed REQUIRE. */
void test_in_tmpdir(const char *tag, void (*body)(const char *dir));

typedef struct {
    int status; /* exit code; 128 + signal if killed; -1 if it could not run */
    char *out;  /* stdout, NUL-terminated */
    char *err;  /* stderr, NUL-terminated */
} test_run_t;

/* Runs tool (a binary next to this test binary) with args (NULL-terminated),
 * stdin from /dev/null, stdout and stderr captured through files in dir;
 * killed after 30 s (a test failure). Returns 0 when it ran to its end, else
 * -1 after a test failure. */
int test_run_tool(test_run_t *r, const char *dir, const char *tool, const char *const *args);
void test_run_close(test_run_t *r);

#define TEST_RUN_TOOL(r, dir, tool, ...)                                       \
    do {                                                                       \
        const char *test_run_args_[] = { __VA_ARGS__, NULL };                  \
        test_run_tool(r, dir, tool, test_run_args_);                           \
    } while (0)

/* The number after "key": in a JSON text, or NaN. */
double test_json_num(const char *s, const char *key);

/* Seconds on the monotonic clock (for ordering and loose bounds in tests). */
double test_now(void);

/* Sends stderr (the log) to the file path until test_stderr_end(), which
 * puts it back and returns what was written (malloc'd, NUL-terminated; ""
 * when it cannot be read), or NULL when begin had failed. begin returns the
 * saved descriptor or -1 after a test failure. */
int test_stderr_begin(const char *path);
char *test_stderr_end(int saved, const char *path);

/* Caps this process's address space (the soft limit) at what it maps now
 * plus extra bytes, so that an allocation past that fails; *old (unless
 * NULL) gets the limit before, for setrlimit to put back. Returns 0, or -1
 * after a test failure. Not under ASan or TSan, whose shadow memory needs
 * the address space: skip the caller there. */
int test_cap_address_space(size_t extra, struct rlimit *old);

#endif
