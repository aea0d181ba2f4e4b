/* HTTP over TCP in tests and fuzzers; see httpwire.h. */
#include "tests/httpwire.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

static int64_t httpwire__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int httpwire_server_end(int fd, uint16_t port, int wait_ms)
{
    struct sockaddr_in me, a, b;
    socklen_t len = sizeof(me);
    if (getsockname(fd, (struct sockaddr *)&me, &len) < 0)
        return -1;
    int64_t until = httpwire__now_ms() + wait_ms;
    for (;;) {
        DIR *d = opendir("/proc/self/fd");
        if (!d)
            return -1;
        int found = -1;
        for (struct dirent *e; found < 0 && (e = readdir(d));) {
            int n = atoi(e->d_name);
            socklen_t la = sizeof(a), lb = sizeof(b);
            struct tcp_info ti;
            socklen_t lt = sizeof(ti);
            if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && n != fd && n != dirfd(d) &&
                getsockname(n, (struct sockaddr *)&a, &la) == 0 && la == sizeof(a) &&
                a.sin_family == AF_INET && a.sin_port == htons(port) &&
                getpeername(n, (struct sockaddr *)&b, &lb) == 0 && b.sin_port == me.sin_port &&
                getsockopt(n, IPPROTO_TCP, TCP_INFO, &ti, &lt) == 0 &&
                ti.tcpi_state == TCP_ESTABLISHED)
                found = n;
        }
        closedir(d);
        if (found >= 0 || httpwire__now_ms() >= until)
            return found;
        sched_yield();
    }
}

int httpwire_header(const char *h, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *end = h + n, *p = memchr(h, '\n', n); /* skip the status line */
    while (p && ++p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
            return 1;
        }
        p = eol + 1;
    }
    return 0;
}
