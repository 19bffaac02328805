"""A CONNECT proxy on loopback: how unmodified astroquery reaches the sandbox where it ignores
its configured server.

astroquery 0.4.11 asks ``https://mast.stsci.edu/api/v0.1/path_lookup/`` whatever its configured
server (the URL is written into ``mast_relative_path``). :class:`ConnectProxy` tunnels ``CONNECT
mast.stsci.edu:443`` to the sandbox serving HTTPS with a certificate for ``mast.stsci.edu`` from a
throwaway authority: the client process gets ``HTTPS_PROXY`` (this proxy) and
``REQUESTS_CA_BUNDLE`` (that authority). Nothing of astroquery is patched and no system file
(``/etc/hosts``) is touched. The tests and ``benchmarks/bench_cloud.py`` use it.
"""

from __future__ import annotations

import select
import socket
import threading

__all__ = ["ConnectProxy"]


class ConnectProxy:
    """A CONNECT-only proxy on loopback sending every tunnel to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.tunnels: list[str] = []  # the CONNECT authorities asked for
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            method, authority, _ = line.split(" ", 2)
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(authority)
            with socket.create_connection(self.target) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pair = {client: upstream, upstream: client}
                while True:
                    ready, _, _ = select.select(list(pair), [], [], 60)
                    if not ready:
                        return
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        pair[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
