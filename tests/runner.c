/*
 * The test runner: runs every registered test (or those whose name contains
 * one of the arguments) in a forked child with a timeout, prints one line per
 * test and a last line "N passed, N failed".
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define RUNNER_LEAK_CHECK() __lsan_do_leak_check()
#else
#define RUNNER_LEAK_CHECK() ((void)0)
#endif

typedef struct {
    const char *name;
    const char *file;
    test_fn fn;
    int timeout_s;
} test_case_t;

static test_case_t tests[512];
static int n_tests;
static int failures; /* in the child: failed checks of the running test */

void test_register(const char *name, const char *file, test_fn fn, int timeout_s)
{
    if (n_tests == (int)(sizeof(tests) / sizeof(tests[0]))) {
        fprintf(stderr, "runner: too many tests\n");
        exit(2);
    }
    tests[n_tests++] = (test_case_t){ name, file, fn, timeout_s };
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "    %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failures++;
}

static int runner_cmp(const void *a, const void *b)
{
    const test_case_t *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

static double runner_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    qsort(tests, (size_t)n_tests, sizeof(tests[0]), runner_cmp);
    /* A filter that matches nothing is an error, not an empty pass: a
     * renamed test would otherwise drop out of a list (make tsan's) unseen. */
    for (int a = 1; a < argc; a++) {
        int any = 0;
        for (int k = 0; k < n_tests && !any; k++)
            any = strstr(tests[k].name, argv[a]) != NULL;
        if (!any) {
            fprintf(stderr, "derrd-tests: no test matches '%s'\n", argv[a]);
            return 2;
        }
    }
    int passed = 0, failed = 0;
    for (int k = 0; k < n_tests; k++) {
        test_case_t *t = &tests[k];
        int match = argc < 2;
        for (int a = 1; a < argc && !match; a++)
            match = strstr(t->name, argv[a]) != NULL;
        if (!match)
            continue;
        fflush(stdout);
        fflush(stderr);
        double t0 = runner_now();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            alarm((unsigned)t->timeout_s);
            failures = 0;
            t->fn();
            fflush(stdout);
            /* _exit skips the sanitizer's exit-time leak check: run it here
             * (it exits non-zero on a leak). */
            RUNNER_LEAK_CHECK();
            _exit(failures ? 1 : 0);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0)
            ;
        double dt = runner_now() - t0;
        const char *why = NULL;
        char buf[64];
        if (WIFSIGNALED(status)) {
            int sig = WTERMSIG(status);
            snprintf(buf, sizeof(buf), sig == SIGALRM ? "timed out after %ds" : "killed by signal %d",
                     sig == SIGALRM ? t->timeout_s : sig);
            why = buf;
        } else if (WEXITSTATUS(status) != 0) {
            why = "checks failed";
        }
        if (why) {
            failed++;
            printf("FAIL %-40s %6.2fs  %s\n", t->name, dt, why);
        } else {
            passed++;
            printf("ok   %-40s %6.2fs\n", t->name, dt);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
