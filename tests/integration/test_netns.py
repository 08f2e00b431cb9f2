"""The network namespace helper's sweep of what killed test processes left behind."""

from __future__ import annotations

import os
import subprocess

from twisted.trial import unittest

from tests.integration import netns


def gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


class RemoveStaleTests(unittest.TestCase):
    def make(self, name: str) -> None:
        self.addCleanup(netns.undo, "netns", "delete", name)
        netns.ip("netns", "add", name)

    def names(self) -> set[str]:
        return {line.split(" ", 1)[0] for line in netns.ip("netns", "list").splitlines()}

    def test_goneProcessesOnly(self) -> None:
        """The namespaces of a test process that is gone are removed; those of a running
        one (this one) stay, and so do namespaces that are not the tests'."""
        stale = f"lsp{gone_pid()}07-pri"
        ours = f"lsp{os.getpid()}07-pri"
        other = f"xlsp{gone_pid()}07-pri"
        for name in (stale, ours, other):
            self.make(name)
        removed = netns.remove_stale()
        self.assertIn(stale, removed)
        names = self.names()
        self.assertNotIn(stale, names)
        self.assertTrue({ours, other} <= names)
