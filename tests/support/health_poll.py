"""Poll a server's /health on a new connection every few milliseconds, in a process of its
own (so that the test's own work cannot delay the polls), until standard input closes;
then print one line per poll: the wall-clock time it started, its latency in seconds and
the status (0 when it failed).

    python -m tests.support.health_poll http://127.0.0.1:8080 0.020
"""

from __future__ import annotations

import sys
import threading
import time
from http.client import HTTPConnection
from urllib.parse import urlsplit


def poll(url: str, every: float) -> list[tuple[float, float, int]]:
    address = urlsplit(url)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    polls: list[tuple[float, float, int]] = []
    while not done.is_set():
        started, start = time.time(), time.monotonic()
        connection = HTTPConnection(address.hostname or "", address.port, timeout=5)
        try:
            connection.request("GET", "/health")
            answer = connection.getresponse()
            answer.read()
            status = answer.status
        except OSError:
            status = 0
        finally:
            connection.close()
        polls.append((started, time.monotonic() - start, status))
        done.wait(every)
    return polls


if __name__ == "__main__":
    for started, latency, status in poll(sys.argv[1], float(sys.argv[2])):
        print(f"{started:.6f} {latency:.6f} {status}")
