/*
 * sockpeer: for tests and fuzzers that talk TCP to a server running in
 * their own process (libmicrohttpd in test_fuzzregress and fuzz_http).
 */
#ifndef DERRD_TESTS_SOCKPEER_H
#define DERRD_TESTS_SOCKPEER_H

#include <stdint.h>

/* The server's end of the TCP connection whose client end is fd: the socket
 * among this process's descriptors bound to port, connected to fd's port
 * and established. The server accepts on its own threads, so this waits
 * for it up to wait_ms. Returns the descriptor (owned by the server), or
 * -1 when there is none by then. */
int sockpeer_server_end(int fd, uint16_t port, int wait_ms);

#endif
