"""A socket server in a thread that counts who connected (for the sandbox's network and socket tests)."""

from __future__ import annotations

import socket
import threading


class Listener:
    """Listens on ``address`` (default: a free TCP port on 127.0.0.1; an AF_UNIX path or abstract name with
    ``family=socket.AF_UNIX``) and counts the connections it accepts."""

    def __init__(self, address=("127.0.0.1", 0), family: int = socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1] if family == socket.AF_INET else None
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
