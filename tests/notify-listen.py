#!/usr/bin/env python3
"""notify-listen.py SOCKET: a stand-in for systemd's notify socket.

Binds a datagram socket at SOCKET and prints each message it receives as
one line, its fields joined by "|", until killed. tests/service.sh reads
the lines to check what derrd told systemd, and in which order.
"""
import os
import socket
import sys

path = sys.argv[1]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
while True:
    msg = s.recv(65536).decode("utf-8", "replace")
    print("|".join(msg.split("\n")), flush=True)
