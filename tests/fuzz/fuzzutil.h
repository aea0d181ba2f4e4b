/*
 * fuzzutil: what the libFuzzer harnesses of tests/fuzz/ share: an invariant
 * check that aborts with a message (libFuzzer then saves the input as a
 * crash), independent validators for the properties the parsers promise,
 * and a scratch directory, and files in it, for the readers that take a
 * path.
 *
 * Harness code only: io/ never aborts on input, the harnesses abort when io/
 * breaks a promise.
 */
#ifndef DERRD_FUZZUTIL_H
#define DERRD_FUZZUTIL_H

#include <stddef.h>

/* Aborts, naming the harness line, when cond is false. */
#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            fuzz_fail(__FILE__, __LINE__, #cond);                              \
    } while (0)

void fuzz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* 1 when s[0..n) is strict UTF-8 (no overlong forms, no surrogates, nothing
 * above U+10FFFF) and, unless tab_ok / controls_ok say otherwise, holds no
 * ASCII control (bytes < 0x20 and 0x7f). Written from the Unicode tables,
 * not from io/'s scanners, so the two can disagree. */
int fuzz_utf8_ok(const unsigned char *s, size_t n, int controls_ok, int tab_ok);

/* 1 when s is NUL-terminated within cap bytes and holds printable ASCII
 * only (0x20..0x7e). */
int fuzz_printable(const char *s, size_t cap);

/* A private directory for files a harness must write (/dev/shm when it is
 * writable, else $TMPDIR or /tmp), made on first use and removed with what
 * is in it at exit. Returns its path, or aborts. */
const char *fuzz_scratch_dir(void);

/* Writes data[0..len) to the file name (no '/') in fuzz_scratch_dir(),
 * replacing what was there, and puts its path in path (cap bytes). Aborts
 * when it cannot. */
void fuzz_scratch_write(const char *name, const void *data, size_t len, char *path, size_t cap);

#endif
