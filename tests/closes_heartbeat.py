"""An app whose import closes the worker's heartbeat socket (the only SOCK_SEQPACKET fd a
worker holds), then fails after a pause ("raise") or hangs ("hang", env CLOSES_HEARTBEAT):
the master sees EOF long before the worker exits."""

import os
import socket
import time

for name in os.listdir("/proc/self/fd"):
    try:
        sock = socket.socket(fileno=int(name))
    except OSError:
        continue
    if sock.type == socket.SOCK_SEQPACKET:
        sock.close()
    else:
        sock.detach()

if os.environ.get("CLOSES_HEARTBEAT") == "hang":
    time.sleep(3600)
time.sleep(1)
raise RuntimeError("closed my heartbeat, then failed")
