#!/usr/bin/env python3
"""stallwatch.py: how long this machine keeps a ready process waiting.

    tests/stallwatch.py OUT

Sleeps 10 ms at a time, as derrd's loop-stall timer ticks, and writes the
longest lateness so far (ms, one number) to OUT whenever it grows, until
killed. The load test runs it beside derrd: a stall that this process also
saw is the machine's (a busy broker, a noisy neighbour), not derrd's loop.
"""
import os
import sys
import time

TICK = 0.010


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: stallwatch.py OUT")
    out = sys.argv[1]
    worst = 0.0
    last = time.monotonic()
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        late = (now - last - TICK) * 1000
        if late > worst:
            worst = late
            tmp = out + ".tmp"
            with open(tmp, "w") as f:
                f.write("%.1f\n" % worst)
            os.replace(tmp, out)
        last = time.monotonic()  # the write's own time is not a stall


if __name__ == "__main__":
    main()
