/*
 * test: a small test harness. A test is a function declared with TEST(name);
 * it registers itself at start-up. CHECK() records a failure and goes on;
 * REQUIRE() records it and returns from the test.
 *
 * The runner (tests/runner.c) runs each test in a child process with a
 * timeout, so a crash or a hang fails that test only, and ends with the line
 * "N passed, N failed".
 */
#ifndef DERRD_TEST_H
#define DERRD_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*test_fn)(void);

void test_register(const char *name, const char *file, test_fn fn, int timeout_s);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Per-test timeout in seconds for TEST(); TEST_SLOW gives more. */
#define TEST_TIMEOUT 60

#define TEST__DEFINE(name, timeout)                                            \
    static void test_##name(void);                                             \
    __attribute__((constructor)) static void test_register_##name(void)        \
    {                                                                          \
        test_register(#name, __FILE__, test_##name, timeout);                  \
    }                                                                          \
    static void test_##name(void)

#define TEST(name) TEST__DEFINE(name, TEST_TIMEOUT)
#define TEST_SLOW(name, seconds) TEST__DEFINE(name, seconds)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                 \
    } while (0)

#define REQUIRE(cond)                                                          \
    do {                                                                       \
        if (!(cond)) {                                                         \
            test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);               \
            return;                                                            \
        }                                                                      \
    } while (0)

/* |a - b| <= tol; prints both values when it fails. */
#define CHECK_NEAR(a, b, tol)                                                  \
    do {                                                                       \
        double test_a_ = (double)(a), test_b_ = (double)(b);                   \
        if (!(fabs(test_a_ - test_b_) <= (double)(tol)))                       \
            test_fail(__FILE__, __LINE__, "CHECK_NEAR(%s, %s): %.9g vs %.9g "  \
                      "(tol %g)", #a, #b, test_a_, test_b_, (double)(tol));    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
    do {                                                                       \
        long long test_a_ = (long long)(a), test_b_ = (long long)(b);          \
        if (test_a_ != test_b_)                                                \
            test_fail(__FILE__, __LINE__, "CHECK_EQ_INT(%s, %s): %lld vs %lld",\
                      #a, #b, test_a_, test_b_);                               \
    } while (0)

#endif
