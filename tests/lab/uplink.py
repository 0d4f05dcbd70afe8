"""A slow uplink: a TCP proxy in front of the lab's registry that lets at most ``rate`` bytes
per second through towards the hosts, all connections together (one shared pipe, as a lab's
internet link is), and counts every byte it carries.

Nothing is faked: dockerd in the booted hosts talks the real registry protocol to the real
registry (Debian's docker-registry) through it; only the bandwidth is narrowed. Booted hosts
share the machine's network namespace, so a listener on 127.0.0.1 is reachable from their
dockerd, which trusts 127.0.0.0/8 registries over plain HTTP.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.lab.relay import TcpRelay

CHUNK = 1 << 16


class Uplink(TcpRelay):
    backlog = 64

    def __init__(self, target: tuple[str, int], rate: float) -> None:
        super().__init__(target, "uplink")
        self.rate = rate  # bytes per second towards the client; 0: no limit
        self.down = 0  # bytes server -> client (what "crossed the uplink" into the lab)
        self.up = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._next = time.monotonic()  # when the shared pipe is free again

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.down = self.up = self.connections = 0

    def __enter__(self) -> Uplink:
        super().__enter__()
        return self

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        for src, dst, down in ((server, client, True), (client, server, False)):
            threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _wait_turn(self, size: int) -> None:
        """Book ``size`` bytes on the shared pipe and sleep until they may go."""
        if self.rate <= 0:
            return
        with self._lock:
            start = max(self._next, time.monotonic())
            self._next = start + size / self.rate
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if down:
                    self._wait_turn(len(data))
                dst.sendall(data)
                with self._lock:
                    if down:
                        self.down += len(data)
                    else:
                        self.up += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            src.close()
