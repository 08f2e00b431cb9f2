"""``CommandError``: a failure of the ``licenseserver`` tool, told in one line.

In a module of its own so that every command module (``cli``, ``certs``,
``client.cli``) raises the same class without importing the tool's main
module, and ``python -m licenseserver.cli`` catches it however it was started.
"""

from __future__ import annotations


class CommandError(Exception):
    """A failure to report to the user in one line (exit status 1)."""
