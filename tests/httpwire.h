/*
 * httpwire: for tests and fuzzers that talk HTTP over TCP to a server
 * running in their own process (libmicrohttpd in test_http,
 * test_fuzzregress and fuzz_http).
 */
#ifndef DERRD_TESTS_HTTPWIRE_H
#define DERRD_TESTS_HTTPWIRE_H

#include <stddef.h>
#include <stdint.h>

/* The server's end of the TCP connection whose client end is fd: the socket
 * among this process's descriptors bound to port, connected to fd's port
 * and established. The server accepts on its own threads, so this waits
 * for it up to wait_ms. Returns the descriptor (owned by the server), or
 * -1 when there is none by then. */
int httpwire_server_end(int fd, uint16_t port, int wait_ms);

/* The value of the first header field called name (any case) in the
 * response header block h[0..n), whose first line is the status line,
 * leading spaces dropped, copied into out (cut to cap). 1, or 0 when
 * absent. */
int httpwire_header(const char *h, size_t n, const char *name, char *out, size_t cap);

#endif
