"""Helpers for tests of MAST's cloud copies against the sandbox's S3 bucket.

astroquery 0.4.11 asks ``https://mast.stsci.edu/api/v0.1/path_lookup/`` whatever its configured
server (the URL is written into ``mast_relative_path``). To run it unmodified against the
sandbox, :class:`ConnectProxy` is an HTTP proxy that tunnels ``CONNECT mast.stsci.edu:443`` to
the sandbox serving HTTPS with a certificate for ``mast.stsci.edu`` from a throwaway authority:
the subprocess gets ``HTTPS_PROXY`` (this proxy) and ``REQUESTS_CA_BUNDLE`` (that authority).
Nothing of astroquery is patched and no system file (``/etc/hosts``) is touched.
"""

from __future__ import annotations

import select
import socket
import threading

__all__ = ["ConnectProxy", "bucket_rows", "s3_client"]


class ConnectProxy:
    """A CONNECT-only proxy on loopback sending every tunnel to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.tunnels: list[str] = []  # the CONNECT authorities asked for
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
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
                    ready, _, _ = select.select(list(pair), [], [], 30)
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


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    """An anonymous boto3 client of ``endpoint`` with botocore's retries off (faults stay visible)."""
    import boto3
    import botocore
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1}))


def bucket_rows(sandbox, proposal: str = "1073") -> list[dict]:  # type: ignore[no-untyped-def]
    """The distinct product rows of a program's observations."""
    rows: dict[str, dict] = {}
    for obs in sandbox.catalog.observations():
        if obs["proposal_id"] == proposal:
            for row in sandbox.catalog.products(obs["obsid"]):
                rows.setdefault(row["dataURI"], row)
    return list(rows.values())
