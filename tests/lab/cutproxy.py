"""A TCP proxy that cuts the link: a stand-in for a network that drops mid-transfer.

Forwards one port on 127.0.0.1 to a lab host's sshd and, after ``cut_after`` bytes have gone from
the client to the server, closes both sides at once (no SSH-level goodbye), as a dropped cable
or a dying VPN does. ``cut_after=None`` forwards everything. ``cut_after`` and ``cut_event``
can be changed while it runs. The client sees a broken connection; sshd sees its socket close,
so the remote command's stdin ends early: exactly what an interrupted upload looks like.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any

from provision.hostkeys import host_key_name
from tests.lab.relay import TcpRelay, close_both


class CutProxy(TcpRelay):
    def __init__(self, target: tuple[str, int], cut_after: int | None = None) -> None:
        super().__init__(target, "cut-proxy")
        self.cut_after = cut_after
        self.sent = 0  # client -> server bytes forwarded, over all connections
        self.cut = threading.Event()  # set once a link was cut

    @property
    def key_name(self) -> str:
        """The proxy's name in known_hosts (``[127.0.0.1]:PORT``)."""
        return host_key_name(self.address, self.port)

    def hostvars(self) -> dict[str, Any]:
        return {"ansible_host": self.address, "ansible_port": self.port}

    def __enter__(self) -> CutProxy:
        super().__enter__()
        return self

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is client:
                        if self.cut_after is not None and self.sent + len(data) > self.cut_after:
                            room = self.cut_after - self.sent
                            server.sendall(data[: max(room, 0)])
                            self.sent += max(room, 0)
                            self.cut.set()
                            return
                        self.sent += len(data)
                        server.sendall(data)
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            close_both(client, server)
