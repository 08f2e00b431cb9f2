"""A small state machine: one transition table, and enter/leave hooks on its owner.

``StateMachine(owner, initial, table)`` holds a state. ``fire(event)`` looks
up ``(state, event)`` in ``table``: with no entry the event means nothing in
that state and is ignored; otherwise the machine calls the owner's
``leave<Old>()``, changes state, then calls ``enter<New>()`` (each hook only
if the owner has it: ``enterHandingBack`` for the state ``handing-back``). An
event that leads back to the same state calls no hook. Every change is kept in
``history`` (state, event, new state) for tests and for the log, and a guard
may refuse an event before it moves anything (``fire`` returns False).

This is the shape of Buildbot's clustered services (``activate`` and
``deactivate`` around one claim loop), written down as a table so that every
way in and out of a state can be read in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger


class StateMachine:
    """The state of ``owner``, changed only by events that ``table`` allows."""

    log = Logger()

    def __init__(
        self,
        owner: Any,
        initial: str,
        table: Mapping[tuple[str, str], str],
        *,
        guards: Mapping[str, Callable[[], bool]] | None = None,
    ):
        self.owner = owner
        self.state = initial
        self.table = dict(table)
        self.guards = dict(guards or {})
        """Per event, a check that must pass before the event moves anything."""
        self.history: list[tuple[str, str, str]] = []

    def can(self, event: str) -> bool:
        """Whether ``event`` would change anything now (guards aside)."""
        return (self.state, event) in self.table

    def fire(self, event: str) -> bool:
        """Handle ``event``: move to the state the table names; return whether it moved."""
        target = self.table.get((self.state, event))
        if target is None:
            return False
        guard = self.guards.get(event)
        if guard is not None and not guard():
            return False
        old = self.state
        if target == old:
            return True
        self._hook("leave", old)
        self.state = target
        self.history.append((old, event, target))
        self._hook("enter", target)
        return True

    def _hook(self, prefix: str, state: str) -> None:
        hook = getattr(self.owner, hook_name(prefix, state), None)
        if hook is not None:
            hook()


def hook_name(prefix: str, state: str) -> str:
    """``enterHandingBack`` for ``("enter", "handing-back")``."""
    return prefix + "".join(part.capitalize() for part in state.split("-"))


def states_of(table: Mapping[tuple[str, str], str]) -> set[str]:
    """Every state a transition table names."""
    return {state for state, _ in table} | set(table.values())
