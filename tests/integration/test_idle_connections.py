"""Silent connections against a real server process: they stop no one, and do not stay.

2,000 connections that never send a line are opened to a real ``twistd
licenseserver``. While every one of them is open, a new client's requests are
answered at once; then the idle timeout closes them all. The connections come
from four loopback addresses, 500 each, within the default cap per address,
and the new client from a fifth.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import start_server

SILENT = 2000
SOURCES = [f"127.0.0.{n}" for n in range(2, 6)]
"""Where the silent connections come from: 500 from each."""
IDLE = 5
"""``--idle-timeout`` of the server, in seconds."""
PROMPT = 2.0
"""Seconds within which each answer to the new client must arrive."""
CLOSED_WITHIN = IDLE + 30
"""Seconds, from the last silent connection, within which the server must close them all."""


class SilentConnectionTests(unittest.TestCase):
    def setUp(self):
        data = Path(self.mktemp()).resolve()
        # A lease time of 8 s makes the heartbeat 2 s, so the idle timeout is IDLE itself.
        # The port names no backlog: the server's own (LISTEN_BACKLOG) takes the test's
        # burst of connects, where Twisted's 50 would make a burst that outruns accept()
        # wait a second at a time for the kernel's SYN retries.
        self.server = start_server(self, data, "--lease-ttl", "8", "--idle-timeout", str(IDLE))
        self.address = ("127.0.0.1", self.server.licensing_port)

    def openSilent(self) -> dict[int, socket.socket]:
        """``SILENT`` connections that send nothing, by file number."""
        silent: dict[int, socket.socket] = {}
        self.addCleanup(lambda: [conn.close() for conn in silent.values()])
        for i in range(SILENT):
            conn = socket.socket()
            silent[conn.fileno()] = conn
            conn.settimeout(30)
            conn.bind((SOURCES[i % len(SOURCES)], 0))
            conn.connect(self.address)
        return silent

    def closedByServer(self, silent: dict[int, socket.socket], timeout: float) -> set[int]:
        """The connections of ``silent`` the server has closed within ``timeout`` seconds
        (all of them, if it closes them in time): polled, each as its end arrives."""
        poller = select.poll()
        for fd in silent:
            poller.register(fd, select.POLLIN)
        closed: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(closed) < len(silent):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left * 1000):
                try:
                    data = silent[fd].recv(64)
                except ConnectionResetError:
                    data = b""
                self.assertEqual(data, b"", "the server sends nothing unasked")
                poller.unregister(fd)
                closed.add(fd)
        return closed

    def test_silentConnectionsStopNoOne(self):
        """While 2,000 silent connections are open, a new client gets its answers at once;
        the idle timeout then closes every silent connection."""
        started = time.monotonic()
        silent = self.openSilent()
        opened = time.monotonic()
        self.assertLess(opened - started, IDLE / 2, "opening the connections took too long")

        with socket.create_connection(self.address, timeout=PROMPT) as client:
            lines = client.makefile("rb")
            for request, word in [
                (b"PING\n", b"OK"),
                (b"STATUS\n", b"OK server="),
                (b"HELLO product=XMLSpy version=2025r2 host=ws1 machine=m1\n", b"OK server="),
            ]:
                asked = time.monotonic()
                client.sendall(request)
                answer = lines.readline()
                self.assertTrue(answer.startswith(word), (request, answer))
                self.assertLess(time.monotonic() - asked, PROMPT, request)

        self.assertEqual(self.closedByServer(silent, 0), set(), "a silent connection closed early")
        self.assertLess(time.monotonic() - started, IDLE, "the check came too late")

        closed = self.closedByServer(silent, CLOSED_WITHIN)
        self.assertEqual(len(closed), SILENT, self.server.log_tail())
        self.assertTrue(self.server.running, self.server.log_tail())
        with socket.create_connection(self.address, timeout=PROMPT) as client:
            client.sendall(b"PING\n")
            self.assertEqual(client.makefile("rb").readline(), b"OK\n")

    def test_listenBacklog(self):
        """The licensing port's socket listens with the server's backlog, as the kernel
        reports it (``ss``: the send queue of a listening socket is its backlog)."""
        from licenseserver.listening import LISTEN_BACKLOG

        port = self.server.licensing_port
        shown = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        self.assertEqual(shown[0], "LISTEN", shown)
        self.assertEqual(int(shown[2]), LISTEN_BACKLOG)
