"""A stand-in for the Hugging Face hub on 127.0.0.1 (and for plain file servers), for download tests.

It answers the hub's file-resolve URLs ``/{repo}/resolve/{revision}/{path}`` (and any other path it was
given) with what ``huggingface_hub`` reads from the real hub: ``ETag`` (the file's sha256, as for LFS
files), ``X-Repo-Commit``, ``Content-Length``, ``Accept-Ranges`` and ``206`` answers to ``Range``
requests. Faults on demand: ``cut_once`` paths send half of their first GET and drop the connection;
``corrupt`` paths send bytes that differ from the advertised hash. The cut comes after ``cut_fraction``
of the body (huggingface_hub writes 10 MiB chunks, so a resume needs a cut past the first one). Every request is logged.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubStub:
    files: dict[str, bytes]                               # URL path -> bytes
    cut_once: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    cut_fraction: float = 0.5
    log: list[tuple[str, str, str | None]] = field(default_factory=list)   # (method, path, Range header)
    sent: dict[str, int] = field(default_factory=dict)   # body bytes sent per path

    def start(self) -> "HubStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:   # keep pytest output clean
                pass

            def _head(self, send_body: bool) -> None:
                path = self.path.split("?")[0]
                stub.log.append((self.command, path, self.headers.get("Range")))
                if path not in stub.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data = stub.files[path]
                body = bytearray(data)
                if path in stub.corrupt:
                    body[len(body) // 2] ^= 0xFF
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                chunk = bytes(body[start:])
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not send_body:
                    return
                if path in stub.cut_once:
                    stub.cut_once.discard(path)
                    half = int(len(chunk) * stub.cut_fraction)
                    self.wfile.write(chunk[:half])
                    self.wfile.flush()
                    stub.sent[path] = stub.sent.get(path, 0) + half
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)
                stub.sent[path] = stub.sent.get(path, 0) + len(chunk)

            def do_HEAD(self) -> None:  # noqa: N802
                self._head(send_body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._head(send_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the GETs of ``path`` (None: a full request)."""
        return [r for method, p, r in self.log if method == "GET" and p == path]


def resolve_path(repo: str, path: str, revision: str = "main") -> str:
    return f"/{repo}/resolve/{revision}/{path}"
