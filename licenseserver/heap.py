"""Keep the garbage collector off what a server keeps for its whole life.

CPython's cyclic garbage collector walks every tracked object of its oldest
generation on each full collection, and a busy licensing port allocates
enough (Deferreds, leases, answers) to run one every few hundred requests. A
license server's heap is mostly objects that never die: the modules,
classes and templates loaded at start, and the license pool read from the
store. ``gc.freeze()`` moves everything alive into a permanent generation
that collections skip; those objects are still freed by reference counting
when they go. Freezing once the pool is loaded cut the server's CPU per
pipelined CHECKOUT and RELEASE by about a tenth (``docs/performance.md``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from twisted.application import service


class FreezeWhenLoaded(service.Service):
    """Freeze the heap (``gc.freeze``) once ``role`` has loaded its pool, once per start."""

    def __init__(self, role: Any, freeze: Callable[[], None] = gc.freeze) -> None:
        self.role = role
        self._freeze = freeze

    def startService(self) -> None:
        super().startService()
        self.role.whenLoaded().addCallbacks(self._loaded, lambda failure: None)

    def _loaded(self, ignored: Any) -> None:
        if self.running:
            self._freeze()
