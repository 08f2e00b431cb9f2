"""The exceptions of the client SDK: one class per protocol reason, and transport failures.

Every ``ERR`` line a server sends becomes a ``ServerError`` of the class that
matches its reason (``NoSeats`` for ``409 no-seats``), which derives from the
class of its code (``Conflict`` for 409). Each carries ``code``, ``reason``,
``message`` (the server's text for people, or None), the other arguments of
the line, and the address of the server that answered. An ``ERR`` with a
reason this client does not know yet still gets the class of its code.

Failures that are not answers (a server that cannot be reached, a
connection that breaks, no answer in time) are ``ServerUnavailable``; when
no server of the list serves at all the client raises ``NoServerError``,
which lists what each one did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from licenseserver.protocols import wire


class LicenseClientError(Exception):
    """Base class of every error the client SDK raises."""


class ClientClosedError(LicenseClientError):
    """The client (or the lease) was closed before the call."""


class ServerUnavailable(LicenseClientError):
    """A server could not be reached or did not answer; ``address`` names it."""

    def __init__(self, address: str, message: str):
        super().__init__(f"{address}: {message}")
        self.address = address
        self.message = message


class ConnectFailed(ServerUnavailable):
    """The connection to the server could not be made (refused, unreachable, no name)."""


class ConnectionLost(ServerUnavailable):
    """The connection broke before the server answered."""


class ServerTimeout(ServerUnavailable):
    """The server did not answer (or accept the connection) in time."""


class ProtocolViolation(ServerUnavailable):
    """The server sent something that is not a response of the licensing protocol."""


class NoServerError(LicenseClientError):
    """No server of the list served the request; ``attempts`` says what each one did.

    ``attempts`` is a list of ``(address, exception)`` pairs in the order tried.
    """

    def __init__(self, attempts: Sequence[tuple[str, BaseException]], message: str = ""):
        self.attempts = list(attempts)
        if not message:
            if self.attempts:
                tried = "; ".join(f"{address}: {brief(e)}" for address, e in self.attempts)
                message = f"no license server served the request ({tried})"
            else:
                message = "no license server served the request"
        super().__init__(message)


def brief(error: BaseException) -> str:
    """What went wrong at one server, in a few words."""
    if isinstance(error, ServerUnavailable):
        return error.message
    if isinstance(error, ServerError):
        return f"{error.code} {error.reason}"
    return str(error) or type(error).__name__


class ServerError(LicenseClientError):
    """An ``ERR`` answer: ``code``, ``reason``, ``message``, ``arguments``, ``server``."""

    code = 0
    reason = ""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str | None = None,
        arguments: Mapping[str, str] | None = None,
        server: str | None = None,
    ):
        self.code = code
        self.reason = reason
        self.message = message
        self.arguments = dict(arguments or {})
        self.server = server
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.code} {self.reason}"
        if self.message:
            text += f": {self.message}"
        if self.server:
            text += f" (from {self.server})"
        return text


# One class per code.


class BadRequest(ServerError):
    """400: the server could not understand the request."""

    code = 400


class HelloRequired(ServerError):
    """401: the session has not said HELLO."""

    code = 401


class Refused(ServerError):
    """403: refused by a rule of the server."""

    code = 403


class NotFound(ServerError):
    """404: no such lease or license."""

    code = 404


class Conflict(ServerError):
    """409: conflicts with what is in use."""

    code = 409


class Gone(ServerError):
    """410: what was asked for was ended for good."""

    code = 410


class LineTooLong(ServerError):
    """413: the request line was too long; the server closed the connection."""

    code = 413


class VersionMismatch(ServerError):
    """426: server versions differ (peer links only)."""

    code = 426


class Overloaded(ServerError):
    """429: the server sheds load; try again later or elsewhere."""

    code = 429


class InternalServerError(ServerError):
    """500: a fault of the server."""

    code = 500


class Standby(ServerError):
    """503: a failover in standby; ``primary`` names the server to use."""

    code = 503

    @property
    def primary(self) -> str | None:
        value = self.arguments.get("primary")
        return None if value in (None, "", "none") else value


# One class per reason.


class UnknownCommand(BadRequest):
    reason = "unknown-command"


class ClientTooOld(Refused):
    """The failover does not serve this product version; ``minimum`` is the oldest it does."""

    reason = "client-too-old"

    @property
    def minimum(self) -> str | None:
        return self.arguments.get("minimum")


class NotAssigned(Refused):
    reason = "not-assigned"


class InsufficientCores(Refused):
    reason = "insufficient-cores"


class BorrowDisabled(Refused):
    reason = "borrow-disabled"


class PolicyDenied(Refused):
    """The site's seat policy does not let this user or host take a seat of the product."""

    reason = "policy-denied"


class NotAuthorized(Refused):
    reason = "not-authorized"


class UnknownLease(NotFound):
    reason = "unknown-lease"


class NoLicense(NotFound):
    reason = "no-license"


class Revoked(Gone):
    """An admin ended the lease (it freed the seat): the client takes no other seat on its
    own; the application decides whether to ask its user and check out again."""

    reason = "revoked"


class NoSeats(Conflict):
    reason = "no-seats"


class AlreadyPaired(Conflict):
    reason = "already-paired"


class TooManyConnections(Overloaded):
    reason = "too-many-connections"


class RateLimited(Overloaded):
    reason = "rate-limited"


BY_CODE: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        HelloRequired,
        Refused,
        NotFound,
        Conflict,
        Gone,
        LineTooLong,
        VersionMismatch,
        Overloaded,
        InternalServerError,
        Standby,
    )
}
"""The class of each error code."""

BY_REASON: dict[str, type[ServerError]] = {
    cls.reason: cls
    for cls in (
        UnknownCommand,
        ClientTooOld,
        NotAssigned,
        InsufficientCores,
        BorrowDisabled,
        PolicyDenied,
        NotAuthorized,
        UnknownLease,
        NoLicense,
        Revoked,
        NoSeats,
        AlreadyPaired,
        TooManyConnections,
        RateLimited,
    )
}
"""The class of each reason that has one of its own (the rest use their code's class)."""


def error_class(code: int, reason: str) -> type[ServerError]:
    """The exception class for an ``ERR <code> <reason>`` line.

    A reason of the protocol (``wire.REASONS``) whose code matches gets its
    own class or its code's; anything else gets its code's class, or
    ``ServerError`` for a code this client does not know.
    """
    if wire.REASONS.get(reason) == code:
        cls = BY_REASON.get(reason)
        if cls is not None:
            return cls
    return BY_CODE.get(code, ServerError)


def error_from_response(response: wire.Response, server: str | None = None) -> ServerError:
    """The typed exception for a parsed ``ERR`` response from ``server``."""
    arguments = dict(response.args)
    message = arguments.pop("message", None)
    cls = error_class(response.code, response.reason)
    return cls(response.code, response.reason, message, arguments, server)
