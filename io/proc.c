/* Process-level helpers; see proc.h. */
#include "proc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

int proc_restart_with_env(char *const argv[], const char *name, const char *value)
{
    if (!value || getenv(name))
        return 0;
    /* The path this program was started from, not /proc/self/exe: the
     * kernel names a process after the file name it execs, and "exe" is
     * not what ps, pgrep, top or the journal's _COMM should see. A path
     * that names another file is not started: /proc/self/exe is the
     * dynamic loader when the program was run as `ld.so PROGRAM ARGS`, or
     * the path holds a new binary by now. A path that is gone (a deleted
     * binary, fexecve's /dev/fd/N) leaves /proc/self/exe. */
    const char *path = (const char *)getauxval(AT_EXECFN);
    struct stat self, there;
    if (stat("/proc/self/exe", &self) != 0)
        return -errno;
    if (!path || stat(path, &there) != 0)
        path = "/proc/self/exe";
    else if (there.st_dev != self.st_dev || there.st_ino != self.st_ino)
        return -ESTALE;
    if (setenv(name, value, 1) != 0)
        return -errno;
    execv(path, argv);
    int rc = -errno;
    unsetenv(name); /* what the process goes on with is what it loaded */
    return rc;
}

long proc_status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    size_t n = strlen(field);
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            if (sscanf(line + n + 1, "%ld kB", &kib) != 1)
                kib = -1;
            break;
        }
    fclose(f);
    return kib;
}
