/* Process-level helpers; see proc.h. */
#include "proc.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

int proc_restart_with_env(char *const argv[], const char *name, const char *value)
{
    if (!value || getenv(name))
        return 0;
    /* The binary's own path, not /proc/self/exe: the kernel names the new
     * process after the file executed, and "exe" is what ps, pgrep and
     * journald would show. */
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0 || n >= (ssize_t)sizeof(path) - 1)
        return n < 0 ? -errno : -ENAMETOOLONG;
    path[n] = '\0';
    if (setenv(name, value, 1) != 0)
        return -errno;
    execv(path, argv);
    int rc = -errno;
    unsetenv(name); /* what the process goes on with is what it loaded */
    return rc;
}
