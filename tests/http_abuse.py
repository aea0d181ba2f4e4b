#!/usr/bin/env python3
"""http_abuse.py: the socket-level half of tests/http_abuse.sh.

    http_abuse.py token      PORT TOKEN SNAPDIR
    http_abuse.py malformed  PORT TOKEN SNAPDIR DEADLINE_S
    http_abuse.py oversized  PORT SNAPDIR
    http_abuse.py slowloris  PORT CONNS DEADLINE_S PER_IP_LIMIT
    http_abuse.py slowread   PORT TOKEN CHUNK INTERVAL_S MIN_S MAX_S [SOURCE]
    http_abuse.py parallel   PORT TOKEN OUTDIR THREADS SECONDS

Each subcommand talks raw HTTP/1.1 to a running derrd on 127.0.0.1:PORT,
prints one JSON line with what it measured on stdout, and exits 1 with
"FAIL: ..." lines on stderr when a check fails. SNAPDIR is the snapshot
directory: no response without the token may hold a 64-byte slice from the
middle of any snapshot file in it.
"""
import hashlib
import json
import os
import random
import select
import socket
import statistics
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
failures = []


def fail(msg):
    failures.append(msg)


def finish(result):
    print(json.dumps(result, sort_keys=True))
    for f in failures[:20]:
        print("FAIL: " + f, file=sys.stderr)
    if len(failures) > 20:
        print("FAIL: ... and %d more" % (len(failures) - 20), file=sys.stderr)
    sys.exit(1 if failures else 0)


def model_slices(snapdir):
    """64-byte slices from a quarter, the middle and three quarters into
    every snapshot file (the payload: compressed model bytes)."""
    out = []
    for name in sorted(os.listdir(snapdir)):
        if not (name.startswith("student-") and name.endswith(".dsnap")):
            continue
        try:
            data = open(os.path.join(snapdir, name), "rb").read()
        except OSError:
            continue  # pruned meanwhile
        if len(data) < 1024:
            continue
        for frac in (0.25, 0.5, 0.75):
            at = int(len(data) * frac)
            out.append(data[at:at + 64])
    if not out:
        fail("no snapshot file in %s to take model slices from" % snapdir)
    return out


def leaks(data, slices):
    return any(s in data for s in slices)


def parse_responses(buf, heads):
    """Complete responses at the start of buf: a list of (status, body,
    raw). heads[i] says whether response i answers a HEAD (no body)."""
    out = []
    pos = 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return out
        head = buf[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            out.append((-1, b"", buf[pos:]))  # not HTTP: count it, stop parsing
            return out
        status = int(parts[1])
        clen = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                try:
                    clen = int(v.strip())
                except ValueError:
                    clen = 0
        is_head = heads[len(out)] if len(out) < len(heads) else False
        if is_head or status == 304 or 100 <= status < 200:
            clen = 0
        if len(buf) < end + 4 + clen:
            return out
        out.append((status, buf[end + 4:end + 4 + clen], buf[pos:end + 4 + clen]))
        pos = end + 4 + clen


def exchange(payload, want, heads=(), timeout=2.0, source=None):
    """Sends payload on a new connection and reads until want responses are
    complete, the server closes, or timeout passes. Returns (responses,
    closed_by_server, raw bytes, socket or None). The socket is returned
    still open when fewer than want answers came and the server did not
    close: it is still waiting for the rest of a request."""
    s = socket.socket()
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((HOST, PORT))
    closed = False
    try:
        s.sendall(payload)
    except OSError:
        closed = True  # refused mid-send: the server answered or closed early
    buf = b""
    t_end = time.monotonic() + timeout
    while True:
        resps = parse_responses(buf, list(heads))
        if len(resps) >= want or (resps and resps[-1][0] == -1):
            break
        left = t_end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except OSError:
            closed = True
            break
        if not b:
            closed = True
            break
        buf += b
    resps = parse_responses(buf, list(heads))
    if len(resps) < want and not closed and not (resps and resps[-1][0] == -1):
        return resps, closed, buf, s
    s.close()
    return resps, closed, buf, None


# ---- token -------------------------------------------------------------------

def cmd_token(argv):
    token, snapdir = argv[0], argv[1]
    slices = model_slices(snapdir)
    latest = os.readlink(os.path.join(snapdir, "latest"))
    ver = str(int(latest[len("student-"):-len(".dsnap")]))
    paths = ["/v1/snapshot", "/v1/snapshot/" + ver, "/v1/snapshot/0" + ver, "/v1/status",
             "/metrics", "/readyz", "/nope", "/v1/snapshot/", "/v1/snapshot?x=1",
             "//v1/snapshot", "/v1//snapshot", "/V1/SNAPSHOT", "/healthz/", "/index.html",
             "/v1/snapshot/../../healthz", "/%2e%2e/v1/snapshot"]
    auths = ["", "Authorization: Bearer wrong\r\n", "Authorization: Bearer %sx\r\n" % token,
             "Authorization: Bearer %s\r\n" % token[:-1], "Authorization: Basic %s\r\n" % token,
             "Authorization: %s\r\n" % token, "Authorization: Bearer\r\n",
             "Authorization: Bearer  \r\n", "X-Authorization: Bearer %s\r\n" % token,
             "Authorization: Bearer%s\r\n" % token,
             "Cookie: token=%s\r\n" % token]
    n = 0
    codes = {}
    for path in paths:
        for auth in auths:
            for method in ("GET", "HEAD"):
                req = ("%s %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                       % (method, path, auth)).encode()
                resps, closed, raw, s = exchange(req, 1, heads=[method == "HEAD"], timeout=5)
                n += 1
                st = resps[0][0] if resps else 0
                codes[st] = codes.get(st, 0) + 1
                if st != 401:
                    fail("%s %s with %r: status %s, want 401" % (method, path, auth.strip(), st))
                if len(raw) > 1024:
                    fail("%s %s: a %d-byte answer without the token" % (method, path, len(raw)))
                if leaks(raw, slices):
                    fail("%s %s: model bytes in the answer without the token" % (method, path))
    # the two open paths: 200 without the token, and no model bytes
    for path in ("/healthz", "/"):
        resps, closed, raw, s = exchange(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close"
                                          "\r\n\r\n" % path).encode(), 1, timeout=5)
        n += 1
        st = resps[0][0] if resps else 0
        if st != 200:
            fail("GET %s without the token: %s, want 200" % (path, st))
        if leaks(raw, slices):
            fail("GET %s: model bytes in it" % path)
    finish({"requests": n, "codes": codes})


# ---- malformed ---------------------------------------------------------------

def malformed_cases(token):
    """(name, payload, kind, heads): kind "bad" wants a 4xx or a closed
    connection; "pipe" wants a 200 for the valid first request and then a
    4xx or a close for the rest; 505 is also accepted for "version", and
    a 200 for "lenient" (valid HTTP after all)."""
    rnd = random.Random(20250101)
    auth = "Authorization: Bearer %s\r\n" % token
    cases = []

    def bad(name, payload, kind="bad", heads=()):
        cases.append((name, payload if isinstance(payload, bytes) else payload.encode("latin-1"),
                      kind, heads))

    # garbage bytes
    for i in range(60):
        n = rnd.choice([1, 2, 7, 16, 100, 500, 2000])
        bad("garbage-%d" % i, bytes(rnd.randrange(256) for _ in range(n)) + b"\r\n\r\n")
    for i in range(10):
        bad("printable-garbage-%d" % i,
            "".join(rnd.choice("abcXYZ/ :%\t<>{}") for _ in range(rnd.randrange(5, 300)))
            + "\r\n\r\n")
    bad("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n")
    bad("binary-crlfs", b"\r\n" * 3 + b"\xff\xfe\xfd\r\n\r\n")
    # bad request lines
    for line in ["GET", "GET /", "GET / HTTP/1.1 extra", "GET /  HTTP/1.1",
                 " GET / HTTP/1.1", "GET / HTTTP/1.1", "GET / HTTP/1", "GET / HTTP/", "GET / http/1.1",
                 "GET / HTTP/1.1x", "GET / HTTP/1.a", "GET / HTTP/01.1", "/ HTTP/1.1",
                 "GET\t/\tHTTP/1.1", "GET healthz HTTP/1.1", "GET *healthz HTTP/1.1",
                 "GET http://x/healthz\x01 HTTP/1.1", "GET /healthz HTTP/1.1\rX: y"]:
        for path_note in ("", "?"):
            bad("request-line %r%s" % (line, path_note),
                line.replace("/ ", "/" + path_note + " ", 1) + "\r\nHost: x\r\n\r\n")
    for v in ["HTTP/2.0", "HTTP/3.0", "HTTP/9.9"]:
        bad("version %s" % v, "GET /healthz %s\r\nHost: x\r\n\r\n" % v, kind="version")
    # odd but allowed: a server may split the request line on any run of
    # spaces (RFC 9112 3), and takes HTTP/1.9 for 1.1 (RFC 9110 2.5); a
    # 200 or a 4xx, counted apart
    bad("double space in request line", "GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n", kind="lenient")
    bad("HTTP/1.9", "GET /healthz HTTP/1.9\r\nHost: x\r\n\r\n", kind="lenient")
    # obs-fold: a server may replace it with a space (RFC 9112 5.2)
    bad("obs-fold", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n continued\r\n\r\n",
        kind="lenient")
    bad("obs-fold tab", "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tcontinued\r\n"
        "%s\r\n" % auth, kind="lenient")
    # libmicrohttpd 0.9.75 ends a header value at a NUL and drops a line
    # with an empty name; what is left is checked as usual (the token must
    # still be exact): counted apart, and reported
    bad("NUL after the token", b"GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: "
        b"Bearer " + token.encode() + b"\x00x\r\n\r\n", kind="lenient")
    bad("NUL as Host", b"GET /healthz HTTP/1.1\r\nHost: \x00\r\n\r\n", kind="lenient")
    bad("empty header name", "GET /healthz HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
        kind="lenient")
    bad("nul-token-middle", b"GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: "
        b"Bearer " + token[:3].encode() + b"\x00" + token[3:].encode() + b"\r\n\r\n")
    # HTTP/0.9
    for path in ["/", "/healthz", "/v1/snapshot", "/metrics"]:
        bad("http/0.9 %s" % path, "GET %s\r\n\r\n" % path)
        bad("http/0.9 %s token" % path, "GET %s\r\n%s\r\n" % (path, auth))
    # missing Host (HTTP/1.1)
    for path in ["/", "/healthz", "/v1/snapshot", "/metrics", "/readyz", "/v1/status"]:
        bad("no-host %s" % path, "GET %s HTTP/1.1\r\n\r\n" % path)
        bad("no-host %s token" % path, "GET %s HTTP/1.1\r\n%s\r\n" % (path, auth))
        bad("two-hosts %s" % path, "GET %s HTTP/1.1\r\nHost: a\r\nHost: b\r\n%s\r\n" % (path, auth))
    # invalid percent-escapes, traversal, odd snapshot versions (with the token: 404s)
    for path in ["/%", "/%z", "/%zz", "/%%", "/%0", "/%g0", "/v1/snapshot/%", "/v1/snapshot/%G1",
                 "/v1/snapshot/1%", "/v1/snapshot/%31%", "/%C0%AE%C0%AE/etc/passwd",
                 "/v1/snapshot/..%2f..%2fetc%2fpasswd", "/v1/snapshot/%2e%2e%2flatest",
                 "/v1/snapshot/latest", "/v1/snapshot/-1", "/v1/snapshot/1e3",
                 "/v1/snapshot/99999999999999999999999", "/v1/snapshot/0x10",
                 "/v1/snapshot/%00", "/v1/snapshot/1%00.dsnap", "/v1/snapshot/ 1",
                 "/v1/snapshot/student-00000000000000000001.dsnap", "/v1/snapshot/../latest"]:
        bad("escape %s" % path, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        bad("escape %s token" % path, "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, auth))
    # NUL bytes
    for name, p in [("nul-path", b"GET /hea\x00lthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                    ("nul-path-snap", b"GET /v1/snapshot\x00/1 HTTP/1.1\r\nHost: x\r\n\r\n"),
                    ("nul-method", b"G\x00ET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                    ("nul-version", b"GET /healthz HTTP/1.1\x00\r\nHost: x\r\n\r\n"),
                    ("nul-header-name", b"GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthori\x00zation: "
                     b"Bearer " + token.encode() + b"\r\n\r\n"),
                    ("nul-header-value", b"GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     b"Bearer \x00" + token.encode() + b"\r\n\r\n"),
                    ("nul-only", b"\x00" * 100 + b"\r\n\r\n")]:
        bad(name, p)
    # very long URLs (the connection's memory is 32 KiB)
    for n in [8 << 10, 16 << 10, 31 << 10, 33 << 10, 64 << 10, 256 << 10, 1 << 20]:
        bad("long-url %d" % n, "GET /" + "a" * n + " HTTP/1.1\r\nHost: x\r\n\r\n")
        bad("long-url %d token" % n, "GET /v1/snapshot/" + "1" * n + " HTTP/1.1\r\nHost: x\r\n%s\r\n"
            % auth)
        bad("long-query %d" % n, "GET /v1/snapshot?" + "a=b&" * (n // 4) + " HTTP/1.1\r\nHost: x\r\n\r\n")
    # bad methods
    for m in ["FOO", "get", "Get", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
              "PROPFIND", "MKCOL", "BREW", "G-E-T", "GET\x7f", "\xc3\xa9GET", "M" * 10000]:
        bad("method %r" % m[:12], "%s /v1/snapshot HTTP/1.1\r\nHost: x\r\n%s\r\n" % (m, auth))
        bad("method %r no token" % m[:12], "%s /healthz HTTP/1.1\r\nHost: x\r\n\r\n" % m)
    bad("connect-authority", "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
    bad("options-star", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    bad("post-body", "POST /v1/snapshot HTTP/1.1\r\nHost: x\r\n%sContent-Length: 10\r\n\r\n0123456789"
        % auth)
    bad("put-chunked", "PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\n%sTransfer-Encoding: chunked\r\n\r\n"
        "4\r\nabcd\r\n0\r\n\r\n" % auth)
    # bodies on GET: chunked, sized, both, broken
    for path, a in [("/healthz", ""), ("/v1/snapshot", auth), ("/metrics", auth), ("/", "")]:
        for te, body in [("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
                         ("Transfer-Encoding: chunked", "zz\r\nhello\r\n0\r\n\r\n"),
                         ("Transfer-Encoding: chunked", "fffffffffffffffff\r\nx\r\n"),
                         ("Transfer-Encoding: chunked", "-1\r\nx\r\n0\r\n\r\n"),
                         ("Transfer-Encoding: gzip, chunked", "5\r\nhello\r\n0\r\n\r\n"),
                         ("Transfer-Encoding: identity", "hello"),
                         ("Transfer-Encoding: chunked\r\nContent-Length: 5", "0\r\n\r\n"),
                         ("Content-Length: 5\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
                         ("Content-Length: 5", "hello"),
                         ("Content-Length: 5\r\nContent-Length: 6", "hello!"),
                         ("Content-Length: -1", ""),
                         ("Content-Length: abc", ""),
                         ("Content-Length: 99999999999999999999999", ""),
                         ("Content-Length: 1000000", "x" * 100)]:
            bad("get-body %s %r" % (path, te), "GET %s HTTP/1.1\r\nHost: x\r\n%s%s\r\n\r\n%s"
                % (path, a, te, body))
    # header lines without a colon, and other broken header lines
    for h in ["Host x", "NoColonHere", "X-A", " X-A: folded-continuation-first", "X-A : space-before",
              "X A: space-in-name", "X-A:\x01ctl", "X-A: \x7f", "\tX-A: tab-first",
              "X-\x80: high", "X-A\x00: y", "X-A: b\rc", "X(A): y", "X-A: \x1b[31m"]:
        bad("header %r" % h, "GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % h)
        bad("header %r token" % h, "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\n%s\r\n%s\r\n" % (h, auth))
    bad("bare-cr", "GET /healthz HTTP/1.1\rHost: x\r\r")
    # pipelined junk after a valid request on a kept-alive connection
    good = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for i, junk in enumerate(["JUNK\r\n\r\n", "\x00\x01\x02\xff\r\n\r\n", "GET\r\n\r\n",
                              "FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                              "GET /healthz HTTP/1.1\r\n\r\n",
                              "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\n\r\n",
                              "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                              "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n",
                              "GET /healthz HTTP/7.0\r\nHost: x\r\n\r\n",
                              "GET /" + "z" * 40000 + " HTTP/1.1\r\nHost: x\r\n\r\n",
                              "x" * 100000 + "\r\n\r\n"]):
        bad("pipelined-%d" % i, good + junk, kind="pipe")
    return cases


def cmd_malformed(argv):
    token, snapdir, deadline = argv[0], argv[1], float(argv[2])
    slices = model_slices(snapdir)
    cases = malformed_cases(token)
    results = [None] * len(cases)
    lock = threading.Lock()
    pending = []  # (index, socket, opened) for requests the server still waits on
    nxt = [0]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(cases):
                return
            name, payload, kind, heads = cases[i]
            t0 = time.monotonic()
            try:
                resps, closed, raw, s = exchange(payload, 2 if kind == "pipe" else 1, heads,
                                                 timeout=3.0)
            except OSError as e:
                results[i] = ("error", str(e))
                continue
            if token.encode() not in payload and leaks(raw, slices):
                fail("%s: model bytes in the answer without the token" % name)
            codes = [r[0] for r in resps]
            if s is not None:
                if kind == "pipe" and codes != [200]:
                    results[i] = ("bad", "first answer %s, want 200" % codes)
                    s.close()
                    continue
                with lock:
                    pending.append((i, s, t0))
                results[i] = ("pending", None)
                continue
            if kind == "pipe":
                if not codes or codes[0] != 200:
                    results[i] = ("bad", "first answer %s, want 200" % codes)
                elif len(codes) == 1:
                    results[i] = ("closed" if closed else "bad", "no answer to the junk")
                elif 400 <= codes[1] < 500:
                    results[i] = ("4xx", codes[1])
                elif codes[1] == 505 and b"HTTP/7" in payload:
                    results[i] = ("505", 505)
                else:
                    results[i] = ("bad", "junk answered %s" % codes[1])
                continue
            if kind == "lenient" and codes and codes[0] == 200:
                results[i] = ("lenient-200", 200)
            elif not codes:
                results[i] = ("closed", None)
            elif 400 <= codes[0] < 500:
                results[i] = ("4xx", codes[0])
            elif codes[0] == 505 and kind == "version":
                results[i] = ("505", 505)
            else:
                results[i] = ("bad", "status %s" % codes[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # What the server still waits on must be closed by it within the header
    # deadline (it never saw a complete request).
    waited = []
    for i, s, t0 in pending:
        s.settimeout(max(0.1, t0 + deadline + 3 - time.monotonic()))
        try:
            b = s.recv(65536)
            gone = time.monotonic() - t0
            if b:
                if token.encode() not in cases[i][1] and leaks(b, slices):
                    fail("%s: model bytes in the late answer" % cases[i][0])
                st = parse_responses(b, [])
                code = st[0][0] if st else -1
                s.close()
                if 400 <= code < 500:
                    results[i] = ("4xx", code)
                else:
                    results[i] = ("bad", "late answer %s" % code)
            else:
                results[i] = ("closed-by-deadline", round(gone, 2))
                waited.append(gone)
        except socket.timeout:
            results[i] = ("bad", "still open %.1f s after it was sent" % (time.monotonic() - t0))
        except OSError:
            results[i] = ("closed-by-deadline", round(time.monotonic() - t0, 2))
            waited.append(time.monotonic() - t0)
        s.close()
    counts = {}
    codes = {}
    for (name, _, _, _), (what, detail) in zip(cases, results):
        counts[what] = counts.get(what, 0) + 1
        if what in ("4xx", "505"):
            codes[detail] = codes.get(detail, 0) + 1
        if what in ("bad", "error"):
            fail("%s: %s" % (name, detail))
    lenient = [name for (name, _, _, _), (what, _) in zip(cases, results) if what == "lenient-200"]
    finish({"requests": len(cases), "outcomes": counts, "codes": codes, "lenient_200": lenient,
            "pending_closed_after_s": [round(min(waited), 2), round(max(waited), 2)] if waited else [],
            "seconds": round(time.monotonic() - t_start, 1)})


# ---- oversized headers -------------------------------------------------------

def cmd_oversized(argv):
    snapdir = argv[0]
    slices = model_slices(snapdir)
    many = "".join("X-H%05d: %s\r\n" % (k, "v" * 50) for k in range(64 * 1024 // 60 + 1))
    cases = [("one 64 KiB header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % ("a" * 65536)),
             ("64 KiB in %d headers" % many.count("\r\n"), "GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n" % many),
             ("64 KiB cookie", "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n" % ("c=1; " * 13108)),
             ("64 KiB token", "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
              % ("t" * 65536)),
             ("1 MiB of headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n" + "X-A: b\r\n" * (1 << 17) + "\r\n"),
             ("8 MiB header line", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * (8 << 20) + "\r\n\r\n")]
    out = {}
    for name, payload in cases:
        t0 = time.monotonic()
        resps, closed, raw, s = exchange(payload.encode(), 1, timeout=10)
        took = time.monotonic() - t0
        if s is not None:
            s.close()
            fail("%s: no answer and not closed within 10 s" % name)
            continue
        code = resps[0][0] if resps else 0
        if leaks(raw, slices):
            fail("%s: model bytes in the answer" % name)
        if code and not (400 <= code < 500):
            fail("%s: status %s, want 431 (or a 4xx, or a closed connection)" % (name, code))
        out[name] = "%s in %.2f s" % (code if code else "closed", took)
    # and it is still healthy
    resps, closed, raw, s = exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1,
                                     timeout=5)
    if not resps or resps[0][0] != 200:
        fail("/healthz after oversized headers: %s" % (resps[0][0] if resps else "no answer"))
    finish(out)


# ---- slow clients ------------------------------------------------------------

def cmd_slowloris(argv):
    conns, deadline, per_ip = int(argv[0]), float(argv[1]), int(argv[2])
    interval = 2.0  # a header byte every 2 s
    socks = []
    t0 = time.monotonic()
    for i in range(conns):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((HOST, PORT))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        except OSError as e:
            fail("slow connection %d: %s" % (i, e))
            s.close()
            continue
        s.setblocking(False)
        socks.append([s, time.monotonic(), None])  # socket, opened, closed at
    opened_s = time.monotonic() - t0
    normal = {}

    def normal_client():
        # a normal request from another address (127.0.0.2, also loopback)
        # while the slow client holds all the slots its address may have:
        # served at once; time it
        time.sleep(1.0)
        t = time.monotonic()
        try:
            resps, closed, raw, s = exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                             b"Connection: close\r\n\r\n", 1,
                                             timeout=3 * deadline + 10, source="127.0.0.2")
            normal["status"] = resps[0][0] if resps else ("closed" if closed else "no answer")
        except OSError as e:
            normal["status"] = "refused: %s" % e
        normal["seconds"] = round(time.monotonic() - t, 2)

    th = threading.Thread(target=normal_client)
    th.start()
    limit = t0 + 2 * deadline + 3 * interval + 10
    by_fd = {c[0].fileno(): c for c in socks}
    next_send = time.monotonic()
    while time.monotonic() < limit and any(c[2] is None for c in socks):
        now = time.monotonic()
        if now >= next_send:
            for c in socks:
                if c[2] is None:
                    try:
                        c[0].send(b"x")
                    except BlockingIOError:
                        pass
                    except OSError:
                        c[2] = time.monotonic()
            next_send = now + interval
        # wait for the server to let go of any of them, until the next byte
        live = [c[0] for c in socks if c[2] is None]
        if not live:
            break
        readable, _, _ = select.select(live, [], [], max(0.0, next_send - time.monotonic()))
        for s in readable:
            c = by_fd[s.fileno()]
            try:
                b = s.recv(4096)
                if b:
                    c.append(b)  # an answer: the server let go too
            except BlockingIOError:
                continue
            except OSError:
                pass
            c[2] = time.monotonic()
    th.join()
    held = [c[2] - c[1] for c in socks if c[2] is not None]
    still = sum(1 for c in socks if c[2] is None)
    answered = sum(1 for c in socks if len(c) > 3)
    for c in socks:
        c[0].close()
    # the first wave (those accepted at once) and the rest (accepted when
    # the first wave was closed)
    held.sort()
    result = {"slow_connections": len(socks), "opened_in_s": round(opened_s, 2),
              "still_open": still, "answered": answered,
              "held_s": {"min": round(held[0], 1) if held else None,
                         "median": round(statistics.median(held), 1) if held else None,
                         "max": round(held[-1], 1) if held else None},
              "normal_client": normal}
    # Past the per-address limit, the server closes a connection at once;
    # the ones it took are closed by the header deadline.
    refused = sum(1 for h in held if h < 1.0)
    kept = [h for h in held if h >= 1.0]
    result["closed_at_once"] = refused
    result["held_s"] = {"min": round(kept[0], 1) if kept else None,
                        "median": round(statistics.median(kept), 1) if kept else None,
                        "max": round(kept[-1], 1) if kept else None}
    if still:
        fail("%d of %d slow connections still open after %.0f s" % (still, len(socks), limit - t0))
    if per_ip and len(kept) > per_ip:
        fail("%d slow connections from one address held (per-address limit %d)" % (len(kept), per_ip))
    if per_ip and refused < len(socks) - per_ip:
        fail("only %d of the %d connections past the per-address limit were closed at once"
             % (refused, len(socks) - per_ip))
    if kept and kept[0] < deadline - 1:
        fail("a slow connection was closed after %.1f s, before the %.0f s deadline" % (kept[0], deadline))
    if kept and kept[-1] > 2 * deadline + 2 * interval + 2:
        fail("a slow connection was held %.1f s (deadline %.0f s)" % (kept[-1], deadline))
    st = normal.get("status")
    if st != 200:
        fail("normal client (another address) during the slow ones: %s" % st)
    if normal.get("seconds", 1e9) > 2:
        fail("normal client (another address) waited %.1f s" % normal["seconds"])
    finish(result)


# ---- a slow reader -----------------------------------------------------------

def server_state(client):
    """The TCP state (/proc/net/tcp, hex: 01 established) of the server's
    end of the connection whose client end is client; None when gone."""
    cport = client.getsockname()[1]
    try:
        lines = open("/proc/net/tcp").read().splitlines()[1:]
    except OSError:
        return None
    for l in lines:
        f = l.split()
        if f[1].endswith(":%04X" % PORT) and f[2].endswith(":%04X" % cport):
            return f[3]
    return None


def cmd_slowread(argv):
    """GET /v1/snapshot and read CHUNK bytes every INTERVAL seconds, with a
    receive buffer of CHUNK and an Ethernet-sized segment (on loopback the
    kernel would otherwise take megabytes of the body off the server's
    hands at once). The server sends a little before each of its idle
    timeouts, so only a bound on the whole response ends this. Measures
    when the server's end left ESTABLISHED (libmicrohttpd let go of the
    connection; its kernel may still hold and send the rest of what was
    written) and when the connection ended for the client (end of stream
    or reset). Fails when it ended before MIN_S or not by MAX_S, or when
    the whole body came (the reader was not slow enough to tell)."""
    token, chunk, interval = argv[0], int(argv[1]), float(argv[2])
    min_s, max_s = float(argv[3]), float(argv[4])
    source = argv[5] if len(argv) > 5 else None
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, chunk)  # before connect: the window
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    s.bind((source or HOST, 0))
    s.settimeout(10)
    s.connect((HOST, PORT))
    s.sendall(("GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Connection: close\r\n\r\n" % token).encode())
    s.setblocking(False)
    t0 = time.monotonic()
    head = b""
    got = 0
    size = None
    ended = released = None
    how = None
    while time.monotonic() - t0 < max_s and ended is None:
        time.sleep(min(interval, max(0.0, max_s - (time.monotonic() - t0))))
        n = 0
        while n < chunk:
            try:
                b = s.recv(chunk - n)
            except BlockingIOError:
                break
            except OSError as e:
                b, how = b"", "reset (%s)" % e.__class__.__name__
            if not b:
                how = how or "end of stream"
                ended = time.monotonic() - t0
                break
            n += len(b)
            if size is None:
                head += b
                end = head.find(b"\r\n\r\n")
                if end >= 0:
                    for line in head[:end].decode("latin-1").split("\r\n")[1:]:
                        k, _, v = line.partition(":")
                        if k.strip().lower() == "content-length":
                            size = int(v) + end + 4
        got += n
        if released is None and server_state(s) != "01":
            released = time.monotonic() - t0
    held = ended if ended is not None else time.monotonic() - t0
    s.close()
    rate = got / held if held > 0 else 0.0
    result = {"response_bytes": size, "received": got, "bytes_per_s": round(rate, 1),
              "server_let_go_s": round(released, 1) if released is not None else None,
              "ended_s": round(ended, 1) if ended is not None else None, "how": how,
              "whole_response_at_this_rate_s": round(size / rate) if size and rate else None}
    if size is None:
        fail("no response headers in %.0f s" % held)
    elif got >= size:
        fail("the whole response (%d bytes) came in %.1f s: not a slow reader" % (size, held))
    if ended is None:
        fail("the connection still runs after %.0f s (%d of %s bytes read; the server's end "
             "%s)" % (held, got, size, "let go after %.0f s" % released if released is not None
                      else "is established"))
    elif ended < min_s:
        fail("the connection ended after %.1f s, before %.0f s" % (ended, min_s))
    finish(result)


# ---- parallel downloads ------------------------------------------------------

def cmd_parallel(argv):
    token, outdir, nthreads, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    req = ("GET /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           "Connection: close\r\n\r\n" % token).encode()
    lock = threading.Lock()
    bodies = {}    # sha256 -> (version, body)
    by_version = {}  # version -> set of sha256
    stats = {"downloads": 0, "bytes": 0, "errors": 0}
    probe = []
    stop = time.monotonic() + seconds

    def getall(s):
        buf = b""
        while True:
            b = s.recv(1 << 20)
            if not b:
                return buf
            buf += b

    def downloader():
        while time.monotonic() < stop:
            try:
                s = socket.create_connection((HOST, PORT), timeout=30)
                s.sendall(req)
                raw = getall(s)
                s.close()
            except OSError as e:
                with lock:
                    stats["errors"] += 1
                    fail("download: %s" % e)
                continue
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            hdr = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
            err = None
            if not lines[0].startswith("HTTP/1.1 200"):
                err = "status line %r" % lines[0]
            elif int(hdr.get("content-length", -1)) != len(body):
                err = "%d bytes, Content-Length %s" % (len(body), hdr.get("content-length"))
            elif len(body) < 32 or body[:8] != b"DERRDSNP":
                err = "not a snapshot"
            else:
                ver = struct.unpack("<Q", body[24:32])[0]
                if hdr.get("etag") != '"%d"' % ver:
                    err = "ETag %s for version %d" % (hdr.get("etag"), ver)
            with lock:
                if err:
                    stats["errors"] += 1
                    fail("download: " + err)
                    continue
                stats["downloads"] += 1
                stats["bytes"] += len(body)
                h = hashlib.sha256(body).hexdigest()
                if h not in bodies:
                    bodies[h] = ver
                    with open(os.path.join(outdir, "v%d-%s.dsnap" % (ver, h[:12])), "wb") as f:
                        f.write(body)
                by_version.setdefault(ver, set()).add(h)

    def prober():
        while time.monotonic() < stop:
            t = time.monotonic()
            try:
                resps, closed, raw, s = exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                                 b"Connection: close\r\n\r\n", 1, timeout=10)
                code = resps[0][0] if resps else 0
            except OSError:
                code = 0
            probe.append((code, time.monotonic() - t))
            time.sleep(0.1)

    threads = [threading.Thread(target=downloader) for _ in range(nthreads)]
    threads.append(threading.Thread(target=prober))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    for ver, hs in by_version.items():
        if len(hs) != 1:
            fail("version %d came with %d different bodies" % (ver, len(hs)))
    bad_probes = [p for p in probe if p[0] != 200]
    lat = sorted(p[1] for p in probe)
    if bad_probes:
        fail("%d of %d /healthz probes failed during the downloads" % (len(bad_probes), len(probe)))
    if len(by_version) < 2:
        fail("the downloads saw %d version(s): no publish during them" % len(by_version))
    finish({"threads": nthreads, "seconds": round(took, 1), "downloads": stats["downloads"],
            "mib": round(stats["bytes"] / 2**20, 1), "errors": stats["errors"],
            "versions": len(by_version), "distinct_bodies": len(bodies),
            "healthz_probes": len(probe),
            "healthz_ms": {"p50": round(1000 * lat[len(lat) // 2]) if lat else None,
                           "max": round(1000 * lat[-1]) if lat else None}})


if __name__ == "__main__":
    cmd = sys.argv[1]
    PORT = int(sys.argv[2])
    {"token": cmd_token, "malformed": cmd_malformed, "oversized": cmd_oversized,
     "slowloris": cmd_slowloris, "slowread": cmd_slowread, "parallel": cmd_parallel}[cmd](sys.argv[3:])
