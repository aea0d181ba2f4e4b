/* Finding a server's end of a connection in this process; see sockpeer.h. */
#include "tests/sockpeer.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

static int64_t sockpeer__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sockpeer_server_end(int fd, uint16_t port, int wait_ms)
{
    struct sockaddr_in me, a, b;
    socklen_t len = sizeof(me);
    if (getsockname(fd, (struct sockaddr *)&me, &len) < 0)
        return -1;
    int64_t until = sockpeer__now_ms() + wait_ms;
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
        if (found >= 0 || sockpeer__now_ms() >= until)
            return found;
        sched_yield();
    }
}
