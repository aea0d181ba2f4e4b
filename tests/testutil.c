/* Temporary directories and tool runs for tests; see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/fsutil.h"
#include "io/proc.h"
#include "test.h"

char *test_tmpdir_new(const char *tag)
{
    char *dir = malloc(strlen(tag) + 32);
    if (!dir)
        return NULL;
    sprintf(dir, "/tmp/derrd-test-%s-XXXXXX", tag);
    if (!mkdtemp(dir)) {
        free(dir);
        return NULL;
    }
    return dir;
}

static int test__rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void test_tmpdir_free(char *dir)
{
    if (!dir)
        return;
    CHECK(nftw(dir, test__rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
    free(dir);
}

void test_in_tmpdir(const char *tag, void (*body)(const char *dir))
{
    char *dir = test_tmpdir_new(tag);
    if (!dir) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return;
    }
    body(dir);
    test_tmpdir_free(dir);
}

static char *test__slurp(const char *path)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[512];
    if (fsutil_read_all(path, 1 << 24, &buf, &len, err, sizeof(err)) < 0)
        return strdup("");
    char *s = realloc(buf, len + 1);
    if (!s) {
        free(buf);
        return strdup("");
    }
    s[len] = 0;
    return s;
}

int test_run_tool(test_run_t *r, const char *dir, const char *tool, const char *const *args)
{
    memset(r, 0, sizeof(*r));
    r->status = -1;
    char self[4096], bin[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        test_fail(__FILE__, __LINE__, "readlink /proc/self/exe: %s", strerror(errno));
        return -1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    snprintf(bin, sizeof(bin), "%s/%s", self, tool);
    if (access(bin, X_OK) != 0) {
        test_fail(__FILE__, __LINE__, "%s: %s (build it beside the tests)", bin, strerror(errno));
        return -1;
    }
    const char *argv[32];
    int argc = 0;
    argv[argc++] = bin;
    for (int k = 0; args[k] && argc < 31; k++)
        argv[argc++] = args[k];
    argv[argc] = NULL;
    char op[600], ep[600];
    snprintf(op, sizeof(op), "%s/cli.out", dir);
    snprintf(ep, sizeof(ep), "%s/cli.err", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        unlink(op);
        unlink(ep);
        int in = open("/dev/null", O_RDONLY);
        int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || o < 0 || e < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        alarm(30);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = test__slurp(op);
    r->err = test__slurp(ep);
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) {
        test_fail(__FILE__, __LINE__, "%s timed out after 30 s", bin);
        return -1;
    }
    return 0;
}

void test_run_close(test_run_t *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

double test_json_num(const char *s, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *p = strstr(s, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

double test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int test_cap_address_space(size_t extra, struct rlimit *old)
{
    long kib = proc_status_kib("VmSize");
    struct rlimit now;
    if (kib <= 0 || getrlimit(RLIMIT_AS, &now) != 0) {
        test_fail(__FILE__, __LINE__, "cannot read the address space's size or limit");
        return -1;
    }
    if (old)
        *old = now;
    struct rlimit cap = now;
    cap.rlim_cur = (rlim_t)kib * 1024 + (rlim_t)extra;
    if (now.rlim_max != RLIM_INFINITY && cap.rlim_cur > now.rlim_max)
        cap.rlim_cur = now.rlim_max;
    if (setrlimit(RLIMIT_AS, &cap) != 0) {
        test_fail(__FILE__, __LINE__, "setrlimit(RLIMIT_AS): %s", strerror(errno));
        return -1;
    }
    return 0;
}

int test_stderr_begin(const char *path)
{
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (saved < 0 || fd < 0 || dup2(fd, 2) != 2) {
        test_fail(__FILE__, __LINE__, "cannot send stderr to %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (saved >= 0)
            close(saved);
        return -1;
    }
    close(fd);
    return saved;
}

char *test_stderr_end(int saved, const char *path)
{
    if (saved < 0)
        return NULL;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    return test__slurp(path);
}
