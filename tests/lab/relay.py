"""The skeleton the lab's TCP stand-ins share: a listener on 127.0.0.1 that forwards each
connection to a target, with a start/stop lifecycle (a context manager) and an accept loop
that notices stop within 0.2 s. Subclasses say what happens to the bytes (``relay``).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpRelay:
    backlog = 16

    def __init__(self, target: tuple[str, int], name: str) -> None:
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(self.backlog)
        self._listener.settimeout(0.2)
        self.address, self.port = self._listener.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=name)

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.relay(client, server)

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        """Start moving bytes between the two sockets (in threads: the accept loop goes on)."""
        raise NotImplementedError


def close_both(*socks: socket.socket) -> None:
    """Shut down and close, as a dropped link does: no goodbye on either side."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
