/* Helpers of the libFuzzer harnesses; see fuzzutil.h. */
#include "tests/fuzz/fuzzutil.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "\n%s:%d: invariant broken: %s\n", file, line, what);
    abort();
}

int fuzz_utf8_ok(const unsigned char *s, size_t n, int controls_ok, int tab_ok)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            if ((c < 0x20 || c == 0x7f) && !controls_ok && !(tab_ok && c == '\t'))
                return 0;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            len = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            len = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

int fuzz_printable(const char *s, size_t cap)
{
    for (size_t k = 0; k < cap; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == 0)
            return 1;
        if (c < 0x20 || c > 0x7e)
            return 0;
    }
    return 0;
}

static char fuzz__dir[256];

static void fuzz__scratch_remove(void)
{
    DIR *d = opendir(fuzz__dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof(path), "%s/%s", fuzz__dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(fuzz__dir);
}

const char *fuzz_scratch_dir(void)
{
    if (fuzz__dir[0])
        return fuzz__dir;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(fuzz__dir, sizeof(fuzz__dir), "%s/derrd-fuzz-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(fuzz__dir)) {
        perror(fuzz__dir);
        abort();
    }
    atexit(fuzz__scratch_remove);
    return fuzz__dir;
}

void fuzz_scratch_write(const char *name, const void *data, size_t len, char *path, size_t cap)
{
    FUZZ_CHECK(strchr(name, '/') == NULL);
    FUZZ_CHECK((size_t)snprintf(path, cap, "%s/%s", fuzz_scratch_dir(), name) < cap);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}
