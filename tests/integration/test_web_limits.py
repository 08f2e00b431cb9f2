"""Hostile HTTP against a real server process: huge bodies before login, slow requests.

Each test starts ``twistd licenseserver`` and talks to its web port over real
sockets, the way an attacker or a careless script would. Memory is read from
the process's ``/proc/PID/status``: ``VmHWM`` is its peak resident size, so a
body that was buffered or parsed even for a moment shows up there.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import http_request, start_server, wait_for

BIG = 64 << 20
"""The size of the hostile bodies: 64 MiB."""
LIMIT = 1 << 20
"""``--web-max-body`` of the server under test."""
SLACK_KIB = 6 << 10
"""How far the peak resident size may rise over the whole barrage (6 MiB)."""

POST_PATHS = (
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/pool"),
    ("POST", "/clients"),
    ("POST", "/monitoring"),
    ("POST", "/messages"),
    ("POST", "/settings"),
    ("POST", "/api/licenses"),
    ("POST", "/api/licenses/L-1/activate"),
    ("POST", "/api/licenses/L-1/agreement"),
    ("PUT", "/api/settings"),
    ("PUT", "/api/clients/c-1/products/XMLSpy/licenses"),
    ("DELETE", "/api/licenses/L-1"),
)
"""Every path that takes a body or changes something."""

BOUNDARY = "----hostile"


def vm_kib(pid: int, field: str) -> int:
    """A ``Vm...`` line of ``/proc/PID/status``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """Read an HTTP answer until the server closes; its status and body."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, b""
    return int(head.split()[1]), body


class BodyLimitTests(unittest.TestCase):
    """Bodies are bounded before anyone is known, on every path that takes one."""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        self.server = start_server(
            self, base / "ls1", "--name", "ls1", "--web-max-body", str(LIMIT)
        )
        self.pid = self.server.process.pid
        self.address = ("127.0.0.1", self.server.web_port)

    def send(self, method: str, path: str, body: bytes = b"", **fields: str) -> socket.socket:
        """A new connection that has sent a multipart request's head (and ``body``)."""
        sock = socket.create_connection(self.address, timeout=10)
        self.addCleanup(sock.close)
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
            *(f"{name.replace('_', '-')}: {value}" for name, value in fields.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return sock

    def declaredTooLarge(self, method: str, path: str) -> None:
        """A 64 MiB Content-Length is refused with 413 before a byte of the body is sent."""
        sock = self.send(method, path, Content_Length=str(BIG), Expect="100-continue")
        status, body = read_answer(sock)
        self.assertEqual(status, 413, (method, path))
        self.assertIn("larger than", json.loads(body)["error"])

    def chunkedTooLarge(self, method: str, path: str) -> None:
        """A body without a length is cut off with 413 once it passes the limit."""
        sock = self.send(method, path, Transfer_Encoding="chunked")
        piece = b"x" * 65536
        chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
        sent = 0
        try:
            while sent < BIG:
                sock.sendall(chunk)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertLess(sent, BIG, f"the server read all of a chunked {method} {path}")
        status, _ = read_answer(sock)
        self.assertIn(status, (413, 0), (method, path))

    def strangerWithinLimit(self, method: str, path: str) -> None:
        """A body under the limit from someone not logged in is not parsed: the answer
        is the login page's redirect or a 401, never a parse error or a change; the
        login form, read before anyone is known, takes 16 KiB at most (413)."""
        part = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        ).encode()
        body = part + b"A" * (LIMIT - 4096) + f"\r\n--{BOUNDARY}--\r\n".encode()
        sock = self.send(method, path, body, Content_Length=str(len(body)), Connection="close")
        status, _ = read_answer(sock)
        expected = {"/login": (413,), "/logout": (303,)}.get(path, (303, 401))
        self.assertIn(status, expected, (method, path))

    def test_hostileBodiesCostNoMemory(self) -> None:
        """Three 64 MiB bodies (declared, chunked, and a full one under the limit) on
        every path that takes a body leave the peak resident size within a few MiB of
        where it was."""
        for method, path in POST_PATHS:  # warm every path up once
            self.strangerWithinLimit(method, path)
        before = vm_kib(self.pid, "VmHWM")
        for method, path in POST_PATHS:
            self.declaredTooLarge(method, path)
            self.chunkedTooLarge(method, path)
            self.strangerWithinLimit(method, path)
        after = vm_kib(self.pid, "VmHWM")
        self.assertLess(
            after - before,
            SLACK_KIB,
            f"peak resident size rose from {before} KiB to {after} KiB",
        )
        self.assertEqual(http_request(self.server, "GET", "/api/status", auth=False).status, 200)


class SlowClientTests(unittest.TestCase):
    """A request that trickles in is closed by the request timeout; others are served."""

    def test_slowHeadsAreClosed(self) -> None:
        """Twenty clients that send their heads a byte at a time do not keep others from
        being answered, and each gets 408 and is closed once --web-request-timeout
        has passed."""
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        server = start_server(self, base / "ls1", "--name", "ls1", "--web-request-timeout", "2")
        head = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"p" * 4000
        slow = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.web_port), timeout=10)
            self.addCleanup(sock.close)
            sock.setblocking(False)
            slow.append(sock)
        started = time.monotonic()
        closed: dict[int, bytes] = {}
        sent = 0

        def dripAndServe() -> bool:
            nonlocal sent
            if sent < len(head):
                for sock in slow:
                    if id(sock) not in closed:
                        try:
                            sock.send(head[sent : sent + 1])
                        except OSError:
                            pass
                sent += 1
            answer = http_request(server, "GET", "/api/status", auth=False)
            self.assertEqual(answer.status, 200, "another client is served meanwhile")
            for sock in slow:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                closed.setdefault(id(sock), data)
            return len(closed) == len(slow)

        wait_for(dripAndServe, timeout=30, what="the slow clients to be closed")
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 2, "closed only once the timeout had passed")
        self.assertLess(sent, len(head), "closed before the head was complete")
        for data in closed.values():
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:80])
