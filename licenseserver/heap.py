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

The youngest generation is collected every 700 allocations by default. A busy
port has hundreds of requests in flight, each holding a handful of objects
until its write is durable, so every young collection walks them, and those
it finds alive are walked again by the older generations' collections. Once
the pool is loaded the young threshold is raised to ``YOUNG_THRESHOLD``: most
of a request's objects are then freed by reference counting before any
collection sees them. Cycles are still collected, only less often; memory is
bounded by the threshold (some ten thousand objects).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from twisted.application import service

YOUNG_THRESHOLD = 10_000


def raise_young_threshold(threshold: int = YOUNG_THRESHOLD) -> None:
    """Collect the youngest generation every ``threshold`` allocations, older ones as before."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(max(threshold, 1), middle, oldest)


class FreezeWhenLoaded(service.Service):
    """Freeze the heap (``gc.freeze``) once ``role`` has loaded its pool, once per start.

    At the same moment it raises the young generation's threshold (``tune``),
    so that the set-up's garbage is still collected at the default pace.
    """

    def __init__(
        self,
        role: Any,
        freeze: Callable[[], None] = gc.freeze,
        tune: Callable[[], None] = raise_young_threshold,
    ) -> None:
        self.role = role
        self._freeze = freeze
        self._tune = tune

    def startService(self) -> None:
        super().startService()
        self.role.whenLoaded().addCallbacks(self._loaded, lambda failure: None)

    def _loaded(self, ignored: Any) -> None:
        if self.running:
            self._freeze()
            self._tune()
