"""Alert e-mail: the admin's SMTP settings, and sending one message with Twisted's SMTP client.

``Mailer.send`` connects to ``alert_smtp_host:alert_smtp_port`` (TLS from the first
byte with ``alert_smtp_tls`` ``tls``, STARTTLS required with ``starttls``, plain
with ``none``), logs in when ``alert_smtp_user`` is set, and sends one message from
``alert_from`` to ``alert_to``. It never blocks: the answer is a Deferred that fires
with the server's last answer, or fails with ``AlertError`` saying what went wrong
(the server's refusal, a connection that failed, no answer within ``TIMEOUT``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, endpoints, ssl
from twisted.internet.protocol import connectionDone
from twisted.mail import smtp

TIMEOUT = 30.0
"""Seconds a message may take from connecting to the server's last answer."""
TLS_MODES = ("none", "starttls", "tls")

SETTING_DEFAULTS: dict[str, Any] = {
    "alert_smtp_host": "",
    "alert_smtp_port": 25,
    "alert_smtp_tls": "none",
    "alert_smtp_user": "",
    "alert_smtp_password": "",
    "alert_from": "",
    "alert_to": [],
}
"""The alert e-mail settings before the admin sets them (no host: no e-mail)."""
WRITE_ONLY = frozenset({"alert_smtp_password"})
"""Settings the API and the pages never show."""


class AlertError(Exception):
    """Why an alert could not be sent, in words for Messages and the API."""


def check_address(value: Any) -> str | None:
    if not isinstance(value, str) or value.count("@") != 1 or any(c.isspace() for c in value):
        return "must be an e-mail address such as admin@example.com"
    return None


def check_addresses(value: Any) -> str | None:
    if not isinstance(value, list) or any(check_address(v) for v in value):
        return "must be a list of e-mail addresses"
    return None


def check_tls(value: Any) -> str | None:
    return None if value in TLS_MODES else f"must be one of {', '.join(TLS_MODES)}"


def message(sender: str, recipients: list[str], subject: str, body: str) -> bytes:
    """The message as sent: headers and a plain-text body."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = subject
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain="licenseserver")
    mail.set_content(body)
    return mail.as_bytes()


class _Sender(smtp.ESMTPSender):
    """Twisted's SMTP sender, which tells its factory when its connection ends: through an
    endpoint no connector does, and a send cut short (a TLS certificate refused after
    STARTTLS) would otherwise never fire."""

    def connectionLost(self, reason: Any = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.clientConnectionLost(None, reason)


class _SenderFactory(smtp.ESMTPSenderFactory):
    protocol = _Sender


class Mailer:
    """Sends one message with the settings ``setting(name)`` gives at the time of sending."""

    def __init__(self, reactor: Any, setting: Callable[[str], Any]):
        self.reactor = reactor
        self.setting = setting

    def configured(self) -> bool:
        return bool(self.setting("alert_smtp_host") and self.setting("alert_to"))

    def send(self, subject: str, body: str) -> defer.Deferred:
        """Send the message; fire with the server's last answer, or fail with AlertError."""
        host = self.setting("alert_smtp_host")
        recipients = list(self.setting("alert_to") or [])
        if not host or not recipients:
            return defer.fail(AlertError("no SMTP host or no recipient is set"))
        sender = self.setting("alert_from") or f"licenseserver@{host}"
        port = int(self.setting("alert_smtp_port") or 25)
        mode = self.setting("alert_smtp_tls") or "none"
        user = self.setting("alert_smtp_user") or ""
        password = self.setting("alert_smtp_password") or ""
        tls = ssl.optionsForClientTLS(host)
        done: defer.Deferred = defer.Deferred()
        factory = _SenderFactory(
            user.encode() or None,
            password.encode() or None,
            sender,
            recipients,
            io.BytesIO(message(sender, recipients, subject, body)),
            done,
            retries=0,
            timeout=None,  # the Mailer's own timer gives up (``_expire``)
            contextFactory=tls if mode == "starttls" else None,
            requireAuthentication=bool(user),
            requireTransportSecurity=mode == "starttls",
            hostname="licenseserver",
        )
        endpoint: Any = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=TIMEOUT)
        if mode == "tls":
            endpoint = endpoints.wrapClientTLS(tls, endpoint)
        connected: list[Any] = []
        connecting = endpoint.connect(factory)
        connecting.addCallbacks(connected.append, lambda f: done.called or done.errback(f))
        timer = self.reactor.callLater(TIMEOUT, _expire, done, connecting, factory, connected)
        done.addBoth(_stop, timer)
        return done.addCallbacks(_sent, _failed, errbackArgs=(host, port))


def _expire(
    done: defer.Deferred, connecting: defer.Deferred, factory: Any, connected: list[Any]
) -> None:
    """Give up: stop connecting, or drop the connection to a server that says nothing."""
    if not done.called:
        done.errback(AlertError(f"no answer within {TIMEOUT:g} s"))
    factory.sendFinished = True  # the factory must not report the connection's end again
    connecting.cancel()
    for sender in connected:
        sender.transport.abortConnection()


def _stop(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result


def _sent(result: Any) -> str:
    accepted, addresses = result
    return f"accepted for {accepted} of {len(addresses)} recipients"


def _failed(failure: Any, host: str, port: int) -> None:
    error = failure.value
    if isinstance(error, AlertError):
        raise error
    if isinstance(error, smtp.SMTPConnectError):
        why = error.__cause__ or error
        if isinstance(why, SSL.Error | VerificationError):
            raise AlertError(
                f"TLS with {host}:{port} failed: {_tlsWords(why)} (the server's certificate"
                " must be signed by a CA this machine trusts, for the host name set)"
            ) from None
        raise AlertError(f"could not send to {host}:{port}: {why}") from None
    if isinstance(error, smtp.SMTPClientError):
        raise AlertError(f"the SMTP server {host}:{port} refused: {error}") from None
    raise AlertError(f"could not send to {host}:{port}: {failure.getErrorMessage()}") from None


def _tlsWords(error: Exception) -> str:
    """A failed TLS handshake or name check, in words."""
    if isinstance(error, VerificationError):
        return "the certificate is for another host name"
    reasons = [r[-1] for r in error.args[0] if r and r[-1]] if error.args else []
    return ", ".join(reasons) or str(error)


RETRIES = (60.0, 300.0, 900.0)
"""Seconds before each new attempt at an alert that could not be sent."""


class Alerter:
    """Sends alerts by e-mail when the settings name a server and recipients: each at most
    once per ``every`` seconds for its ``key``, tried again after ``RETRIES``, and each
    outcome recorded in Messages through ``record`` (``alert-sent``, ``alert-failed``)."""

    def __init__(self, clock: Any, mailer: Mailer, record: Callable[..., None]):
        self.clock = clock
        self.mailer = mailer
        self.record = record
        self._last: dict[str, float] = {}

    def alert(self, key: str, subject: str, body: str, every: float | None = None) -> None:
        if not self.mailer.configured():
            return
        now = self.clock.seconds()
        last = self._last.get(key)
        if every is not None and last is not None and now - last < every:
            return
        self._last[key] = now
        self._attempt(key, subject, body, 0)

    def _attempt(self, key: str, subject: str, body: str, attempt: int) -> None:
        d = self.mailer.send(subject, body)

        def sent(answer: str) -> None:
            self.record("alert-sent", "info", f"alert e-mail sent ({subject}): {answer}", key=key)

        def failed(failure: Any) -> None:
            why = failure.getErrorMessage()
            if attempt < len(RETRIES):
                wait = RETRIES[attempt]
                self.record(
                    "alert-failed",
                    "warning",
                    f"alert e-mail not sent ({subject}): {why}; trying again in {wait:g} s",
                    key=key,
                )
                self.clock.callLater(wait, self._attempt, key, subject, body, attempt + 1)
            else:
                self.record(
                    "alert-failed",
                    "error",
                    f"alert e-mail not sent ({subject}): {why}; given up",
                    key=key,
                )

        d.addCallbacks(sent, failed)


class Lasting:
    """Whether a trouble (a lost link) has lasted longer than ``after`` seconds, told once
    per trouble: ``check`` answers ``"lasting"`` the first time it has, ``"over"`` the
    first time it is gone after that, and None otherwise."""

    def __init__(self, after: float):
        self.after = after
        self.since: float | None = None
        self.told = False

    def check(self, troubled: bool, now: float, since: float | None = None) -> str | None:
        """Note whether the trouble is there at ``now``; ``since`` is when it began, when
        known better than the first check that sees it."""
        if not troubled:
            told, self.since, self.told = self.told, None, False
            return "over" if told else None
        if self.since is None:
            self.since = now if since is None else min(since, now)
        if not self.told and now - self.since > self.after:
            self.told = True
            return "lasting"
        return None
