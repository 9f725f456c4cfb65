"""A "hung Redis": a TCP server on 127.0.0.1 that accepts every connection and never sends a byte back."""

from __future__ import annotations

import socket
import threading


class HungRedis:
    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port = self._server.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.accepted: list[socket.socket] = []  # held open, never answered, so clients wait on their reads
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="hung-redis", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        for connection in self.accepted:
            connection.close()


if __name__ == "__main__":  # a stand-alone hung broker for the chaos tests' subprocesses
    import sys
    import time

    hung = HungRedis()
    print(hung.port, flush=True)
    sys.stdout.close()
    while True:
        time.sleep(3600)
