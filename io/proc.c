/* Process-level helpers; see proc.h. */
#include "proc.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int proc_restart_with_env(char *const argv[], const char *name, const char *value)
{
    if (!value || getenv(name))
        return 0;
    if (setenv(name, value, 1) != 0)
        return -errno;
    execv("/proc/self/exe", argv);
    int rc = -errno;
    unsetenv(name); /* what the process goes on with is what it loaded */
    return rc;
}
