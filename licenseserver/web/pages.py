"""The web configuration pages: login, logout and the five tabs, served next to the API.

Every page is rendered on the server from the Elements in ``elements``; a
form posts back to its own page, which acts and then redirects (POST,
redirect, GET), with the outcome kept in the session as a notice for the
next page. Pages need a session (``sessions.py``) and every form post must
carry its CSRF token. A failover in standby shows no License Pool, Client
Management or Client Monitoring tab: those paths say where the primary is
and refuse changes (FAILOVER.md rule 5).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.web import resource, server, static
from twisted.web.template import flattenString

from licenseserver import jsonparse
from licenseserver.protocols.wire import ProtocolError
from licenseserver.roles.base import AdminError
from licenseserver.web import display, elements, views
from licenseserver.web.auth import AdminAuth, admin_of, clientAddress
from licenseserver.web.bounded import BodyTooLarge, UnreadableForm, formFields
from licenseserver.web.facade import ServerView
from licenseserver.web.sessions import COOKIE, CSRF_FIELD, AdminSession
from licenseserver.web.throttle import Throttled

STATIC = FilePath(__file__).sibling("static")
EVENTS_SHOWN = 200
"""How many events the Messages tab lists."""
EVENTS_READ = 500
"""How many recent events each page reads for the header's warnings."""
MIN_PASSWORD = 8
LOGIN_MAX_BODY = 16 << 10
"""The most bytes a login form may carry: it is read before anyone is known."""

SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"cache-control": b"no-store",
}

log = Logger()


class FormError(Exception):
    """A form value that will not do; its text is shown to the admin."""


@dataclass
class Html:
    """A page to send."""

    body: bytes
    status: int = 200
    retryAfter: int | None = None
    """Seconds for a ``Retry-After`` header (with a 429)."""


@dataclass
class Redirect:
    """A 303 to ``location`` (after a POST, or to the login page)."""

    location: str


Answer = Html | Redirect


def query(request: Any, name: str) -> str | None:
    """The first value of query argument ``name`` as text; None when absent or empty."""
    return form(request, name) or None


def form(request: Any, name: str, *, strip: bool = True) -> str:
    """The first value of form field ``name`` as text ("" when absent).

    Surrounding white space is dropped, except with ``strip=False`` (passwords).
    A POST's body fields are there only once the page has read them
    (``WebSite.readForm``), after it checked who is asking.
    """
    values = request.args.get(name.encode("ascii"))
    if not values:
        return ""
    text = values[0].decode("utf-8", "replace")
    return text.strip() if strip else text


def sessionKey(request: Any, session: AdminSession) -> str:
    """The throttle's key for password checks inside a session: its address and a tag.

    The tag is a hash of the session id, so that the key can be logged.
    """
    tag = hashlib.sha256(session.id.encode("ascii")).hexdigest()[:8]
    return f"{clientAddress(request)} (browser session {tag})"


def safe_next(value: str) -> str:
    """Where to go after login: one of the pages, never another site."""
    pages = {"/"} | {f"/{name}" for name, _ in display.TABS} | {"/logout"}
    return value if value in pages else "/"


def login_url(next: str = "/", **flags: str) -> str:
    query = {**flags}
    if next and next != "/":
        query["next"] = next
    return "/login" + ("?" + urlencode(query) if query else "")


def _threaded(reactor: Any) -> Callable[..., Awaitable[Any]]:
    def run(function: Callable[..., Any], *args: Any) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    return run


class WebSite:
    """What every page needs: the server, the admin's auth and sessions, the password writer.

    ``setPassword(new)`` stores a new admin password (``DataDir.change_admin_password``);
    it runs through ``runInThread`` (the reactor's thread pool by default), since
    hashing is slow on purpose. Without it the Settings tab cannot change the password.
    """

    def __init__(
        self,
        view: ServerView,
        auth: AdminAuth,
        setPassword: Callable[[str], None] | None = None,
        runInThread: Callable[..., Awaitable[Any]] | None = None,
    ):
        self.view = view
        self.auth = auth
        self.sessions = auth.sessions
        self.setPassword = setPassword
        self.runInThread = runInThread or _threaded(auth.reactor)

    # Serving

    def serve(self, request: server.Request, handler: Callable[..., Awaitable[Answer]]) -> Any:
        """Run an async page handler and send its answer (a 500 page if it fails)."""
        gone: list[Any] = []
        request.notifyFinish().addErrback(gone.append)
        d = defer.ensureDeferred(handler(request))
        d.addErrback(self._failed, request)
        d.addCallback(self._send, request, gone)
        return server.NOT_DONE_YET

    def _failed(self, failure: Any, request: server.Request) -> Answer:
        log.failure("A web page failed", failure)
        return Html(b"<!DOCTYPE html>\n<p>Internal error; see the server log.</p>\n", 500)

    def _send(self, answer: Answer, request: server.Request, gone: list) -> None:
        if gone:
            return
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if isinstance(answer, Redirect):
            request.setResponseCode(303)
            request.setHeader(b"location", answer.location.encode("utf-8"))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(f"See {answer.location}\n".encode())
        else:
            request.setResponseCode(answer.status)
            if answer.retryAfter is not None:
                request.setHeader(b"retry-after", str(answer.retryAfter).encode())
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.write(answer.body)
        request.finish()

    async def events(self, limit: int = EVENTS_READ) -> list[Any]:
        """The newest events, or none when the store cannot give them."""
        try:
            return list(await self.view.events(limit))
        except Exception:
            log.failure("Could not read the events for a page")
            return []

    async def page(
        self,
        request: server.Request,
        *,
        title: str,
        content: Any,
        session: AdminSession | None,
        current: str = "",
        status: int = 200,
        events: list[Any] | None = None,
        notices: list[tuple[str, str]] | None = None,
    ) -> Html:
        """A whole page around ``content``: the header, the tabs and the notices."""
        view = self.view
        if session is not None and events is None:
            events = await self.events()
        facts = display.header_facts(view, events or ())
        shown = list(notices or [])
        if session is not None:
            shown += session.takeNotices()
        element = elements.PageElement(
            title=title,
            facts=facts,
            content=content,
            tabs=display.visible_tabs(view) if session is not None else (),
            current=current,
            notices=shown,
            token=session.csrf if session is not None else None,
        )
        body = await flattenString(request, element)
        return Html(b"<!DOCTYPE html>\n" + body, status)

    async def readForm(
        self, request: server.Request, session: AdminSession | None, limit: int | None = None
    ) -> Html | None:
        """Read the form body of a POST into ``request.args``; an error page if it will not do.

        Pages call this only after they checked the session (or, on the login
        page, with a small ``limit``), so a stranger's body is never parsed.
        """
        try:
            formFields(request, limit)
        except UnreadableForm as e:
            status = 413 if isinstance(e, BodyTooLarge) else 400
            return await self.page(
                request,
                title="Not changed",
                content="",
                session=session,
                status=status,
                notices=[("error", f"{e}, so nothing was changed.")],
            )
        return None

    async def forbidden(self, request: server.Request, session: AdminSession | None) -> Html:
        """The answer to a form post without the right CSRF token: nothing changes."""
        text = (
            "This form had expired or did not come from this page, so nothing was changed."
            " Reload the page and try again."
        )
        return await self.page(
            request,
            title="Not changed",
            content="",
            session=session,
            status=403,
            notices=[("error", text)],
        )


class SiteResource(resource.Resource):
    """A page of the site: ``GET`` and ``POST`` are served by ``_get`` and ``_post``."""

    isLeaf = True

    def __init__(self, site: WebSite):
        super().__init__()
        self.site = site

    def render_GET(self, request: server.Request) -> Any:
        return self.site.serve(request, self._get)

    def render_POST(self, request: server.Request) -> Any:
        return self.site.serve(request, self._post)

    async def _get(self, request: server.Request) -> Answer:
        raise NotImplementedError

    async def _post(self, request: server.Request) -> Answer:
        raise NotImplementedError


class Page(SiteResource):
    """One tab: ``GET`` shows it, ``POST`` acts on its forms and redirects back."""

    name = ""
    title = ""
    poolTab = False
    """Whether a standby failover hides this tab and refuses its changes."""
    discarded = False
    """Whether the changes this tab makes are discarded at handback on an active failover."""

    def __init__(self, site: WebSite):
        super().__init__(site)
        self.view = site.view

    def hidden(self) -> bool:
        return self.poolTab and display.standby(self.view)

    async def _get(self, request: server.Request) -> Answer:
        if request.postpath not in ([], [b""]):
            return await _notFound(self.site, request)
        session = self.site.sessions.fromRequest(request)
        if session is None:
            return Redirect(login_url(f"/{self.name}"))
        events = await self.site.events()
        status = 200
        notices = []
        if self.hidden():
            content: Any = elements.StandbyElement(self.view, self.title)
            status = 409
        else:
            content = await self.content(request, session, events)
            warning = display.discarded_at_handback(self.view) if self.discarded else None
            if warning:
                notices.append(("warning", warning))
        return await self.site.page(
            request,
            title=self.title,
            content=content,
            session=session,
            current=self.name,
            status=status,
            events=events,
            notices=notices,
        )

    async def _post(self, request: server.Request) -> Answer:
        session = self.site.sessions.fromRequest(request)
        if session is None:
            return Redirect(login_url(f"/{self.name}", expired="1"))
        unreadable = await self.site.readForm(request, session)
        if unreadable is not None:
            return unreadable
        if not session.csrfMatches(form(request, CSRF_FIELD)):
            return await self.site.forbidden(request, session)
        if self.hidden():
            primary = self.view.primaryAddress()
            session.notify("error", f"standby failover: make this change on the primary {primary}")
            return Redirect(f"/{self.name}")
        try:
            notice = await self.act(request, session, form(request, "action"))
        except (AdminError, ProtocolError) as e:
            session.notify("error", e.message or str(e))
        except FormError as e:
            session.notify("error", str(e))
        else:
            if notice:
                session.notify("ok", notice)
        return Redirect(f"/{self.name}")

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        """The Element of this tab."""
        raise NotImplementedError

    async def act(self, request: server.Request, session: AdminSession, action: str) -> str | None:
        """Carry out a form's ``action``; return a notice, or raise AdminError/FormError."""
        raise FormError("this page has no forms")


class PoolPage(Page):
    """``/pool``: upload license files; activate, deactivate, accept or delete licenses."""

    name = display.POOL
    title = "License Pool"
    poolTab = True
    discarded = True

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        return elements.PoolElement(self.view, session.csrf)

    async def act(self, request: server.Request, session: AdminSession, action: str) -> str | None:
        if action == "upload":
            return await self._upload(request, session)
        license_id = form(request, "license")
        if not license_id:
            raise FormError("no license was chosen")
        if action in ("activate", "deactivate"):
            await self.view.setLicenseActive(license_id, action == "activate")
            return f"License {license_id} {action}d."
        if action == "accept":
            await self.view.acceptAgreement(license_id)
            return f"The license agreement of {license_id} is accepted."
        if action == "delete":
            await self.view.deleteLicense(license_id)
            return f"License {license_id} deleted."
        raise FormError(f"unknown action {action!r}")

    async def _upload(self, request: server.Request, session: AdminSession) -> str | None:
        names = getattr(request, "fileNames", {}).get(b"file", [])
        files = [
            (names[i] if i < len(names) and names[i] else f"file {i + 1}", data)
            for i, data in enumerate(request.args.get(b"file", []))
            if data.strip()
        ]
        if not files:
            raise FormError("choose a license file to upload")
        added: list[str] = []
        for name, data in files:
            try:
                ids = await self.view.addLicenses(data)
            except AdminError as e:
                session.notify("error", f"{name}: {e.message}")
                continue
            added += ids
            for warning in views.upload_warnings(self.view, ids):
                session.notify("warning", f"{name}: {warning}")
        if added:
            return f"Added license{'s' if len(added) > 1 else ''} {', '.join(added)}."
        return None


class ClientsPage(Page):
    """``/clients``: assign and unassign licenses, unregister machines."""

    name = display.CLIENTS
    title = "Client Management"
    poolTab = True
    discarded = True

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        return elements.ClientsElement(self.view, session.csrf)

    async def act(self, request: server.Request, session: AdminSession, action: str) -> str | None:
        client = form(request, "client")
        if not client:
            raise FormError("no client was chosen")
        if action == "unregister":
            await self.view.unregister(client)
            return f"Client {client} unregistered."
        product = form(request, "product")
        license_id = form(request, "license")
        if not product or not license_id:
            raise FormError("choose a product and a license")
        current = [a.license for a in self.view.assignmentsOf(client, product)]
        if action == "assign":
            await self.view.assign(client, product, [*current, license_id])
            return f"Assigned {license_id} to {client} ({product})."
        if action == "unassign":
            await self.view.assign(client, product, [i for i in current if i != license_id])
            return f"Unassigned {license_id} from {client} ({product})."
        raise FormError(f"unknown action {action!r}")


class MonitoringPage(Page):
    """``/monitoring``: running clients and checked-out seats; freeing a stuck seat."""

    name = display.MONITORING
    title = "Client Monitoring"
    poolTab = True
    discarded = True

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        return elements.MonitoringElement(self.view, session.csrf)

    async def act(self, request: server.Request, session: AdminSession, action: str) -> str | None:
        if action != "revoke":
            raise FormError(f"unknown action {action!r}")
        lease_id = form(request, "lease")
        if form(request, "confirm") != "yes":
            raise FormError(f"tick the box to confirm: the seat of lease {lease_id} was not freed")
        lease = await self.view.revokeLease(lease_id, **admin_of(request, "web"))
        return (
            f"The seat of {lease.machine} ({lease.user}, {lease.product}) is free. Its client's"
            " next heartbeat is refused (410 revoked), and it takes no other seat on its own."
        )


class UsagePage(Page):
    """``/usage``: a product's seats in use and refused requests over a period, as charts;
    its top users and machines; the history as CSV (``?product=P&period=day``)."""

    name = display.USAGE
    title = "Usage"
    poolTab = True

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        product = query(request, "product")
        period = query(request, "period")
        report = await views.usage_report(self.view, product, period)
        return elements.UsageElement(report)


class MessagesPage(Page):
    """``/messages``: events, newest first."""

    name = display.MESSAGES
    title = "Messages"

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        return elements.MessagesElement(events[:EVENTS_SHOWN], EVENTS_SHOWN)


class SettingsPage(Page):
    """``/settings``: failover mode, lease and borrow limits, unpairing the failover,
    vendor keys, admin password."""

    name = display.SETTINGS
    title = "Settings"
    discarded = True

    async def content(self, request: server.Request, session: AdminSession, events: list) -> Any:
        return elements.SettingsElement(self.view, session.csrf)

    async def act(self, request: server.Request, session: AdminSession, action: str) -> str | None:
        if action == "mode":
            return await self._mode(request)
        if action == "licensing":
            return await self._licensing(request)
        if action == "password":
            return await self._password(request, session)
        if action == "vendor-key":
            return await self._vendorKey(request)
        if action == "unpair":
            return await self._unpair(request)
        if action == "policy":
            return await self._policy(request)
        if action == "alerts":
            return await self._alerts(request)
        if action == "alert-test":
            return f"Test e-mail sent: {await self.view.sendTestAlert()}."
        raise FormError(f"unknown action {action!r}")

    async def _alerts(self, request: server.Request) -> str:
        """Save the alert e-mail settings (an empty password leaves the one set)."""
        port = form(request, "alert_smtp_port") or "25"
        if not (port.isascii() and port.isdigit()):
            raise FormError("the SMTP port must be a whole number")
        values: dict[str, Any] = {
            "alert_smtp_host": form(request, "alert_smtp_host"),
            "alert_smtp_port": int(port),
            "alert_smtp_tls": form(request, "alert_smtp_tls") or "none",
            "alert_smtp_user": form(request, "alert_smtp_user"),
            "alert_from": form(request, "alert_from"),
            "alert_to": [a for a in re.split(r"[\s,;]+", form(request, "alert_to")) if a],
        }
        password = form(request, "alert_smtp_password", strip=False)
        if password:
            values["alert_smtp_password"] = password
        await self.view.updateSettings(values)
        return "Alert e-mail settings saved."

    async def _policy(self, request: server.Request) -> str:
        """Replace the seat policy with the JSON of the form, checked as a whole."""
        try:
            data = jsonparse.loads(form(request, "policy").encode("utf-8"))
        except ValueError as e:
            raise FormError(f"the seat policy is not JSON: {e}") from None
        saved = await self.view.setSeatPolicy(data)
        return f"Seat policy saved: {len(saved['groups'])} groups, {len(saved['rules'])} rules."

    async def _unpair(self, request: server.Request) -> str:
        """Forget the failover, once the admin ticked the box that confirms it is gone."""
        if form(request, "confirm") != "yes":
            raise FormError(
                "tick the box to confirm that the failover is gone: it was not unpaired"
            )
        forgotten = await self.view.unpair()
        if forgotten is None:
            return "No failover was paired: nothing changed."
        return (
            f"The failover {forgotten} is unpaired: the exact partition limits no longer apply."
            " If it still runs, stop it: it pairs again when it reaches this server."
        )

    async def _vendorKey(self, request: server.Request) -> str:
        """Trust the vendor public key of the uploaded file, or of the pasted text."""
        files = [data for data in request.args.get(b"keyfile", []) if data.strip()]
        pem = files[0] if files else form(request, "pem").encode("utf-8")
        if not pem.strip():
            raise FormError("choose the vendor's public key file (PREFIX.pub) or paste it")
        key, new = await self.view.addVendorKey(pem)
        if not new:
            return f"Vendor key {key} was trusted already."
        return f"Vendor key {key} is trusted now: licenses it signed can be added."

    async def _mode(self, request: server.Request) -> str:
        role = form(request, "role")
        primary = form(request, "primary") or None
        mode = await self.view.switchTo(role, primary if role == "failover" else None)
        if mode["role"] == "failover":
            return f"This server is now the failover of {mode['primary']}."
        return "This server is now a primary."

    async def _licensing(self, request: server.Request) -> str:
        numbers = {
            "lease_ttl": "lease time",
            "borrow_max_days": "longest checkout",
            "alert_expiry_days": "warning of licenses that end",
        }
        required = ("lease_ttl", "borrow_max_days")
        values: dict[str, Any] = {}
        for name, label in numbers.items():
            if name not in required and name.encode("ascii") not in request.args:
                continue
            text = form(request, name)
            if not (text.isascii() and text.isdigit()):
                raise FormError(f"the {label} must be a whole number")
            values[name] = int(text)
        if self.view.roleName != "failover":  # a failover's box is off and disabled
            values["borrow_enabled"] = bool(form(request, "borrow_enabled"))
        for name in ("partition_policy", "failover_share"):
            if name.encode("ascii") in request.args:
                values[name] = form(request, name)
        await self.view.updateSettings(values)
        return "Settings saved."

    async def _password(self, request: server.Request, session: AdminSession) -> str:
        if self.site.setPassword is None:
            raise FormError("this server cannot change its admin password from the web")
        current, new, repeat = (
            form(request, name, strip=False) for name in ("current", "new", "repeat")
        )
        if new != repeat:
            raise FormError("the two new passwords differ")
        if len(new) < MIN_PASSWORD:
            raise FormError(f"the new password needs at least {MIN_PASSWORD} characters")
        try:
            ok = await self.site.auth.checkFrom(request, current, key=sessionKey(request, session))
        except Throttled as e:
            raise FormError(str(e)) from None
        if not ok:
            raise FormError("the current password is wrong; the password was not changed")
        await self.site.runInThread(self.site.setPassword, new)
        self.site.sessions.endAllBut(session)
        log.info("The admin password was changed from the web page")
        return "Password changed. Other browser sessions were logged out."


class LoginPage(SiteResource):
    """``/login``: the password form; a right password starts a session."""

    async def _get(self, request: server.Request) -> Answer:
        next = safe_next(form(request, "next"))
        if self.site.sessions.fromRequest(request) is not None:
            return Redirect(next)
        notices = []
        if form(request, "failed"):
            notices.append(("error", "Wrong password."))
        if form(request, "expired"):
            notices.append(("error", "Your session has ended: log in again."))
        if form(request, "out"):
            notices.append(("ok", "Logged out."))
        return await self.loginPage(request, next, notices)

    async def loginPage(
        self, request: server.Request, next: str, notices: list[tuple[str, str]], status: int = 200
    ) -> Html:
        return await self.site.page(
            request,
            title="Log in",
            content=elements.LoginElement(next),
            session=None,
            status=status,
            notices=notices,
        )

    async def _post(self, request: server.Request) -> Answer:
        # No CSRF token here: a forged login would need the admin password, and
        # SameSite=Strict keeps the resulting cookie out of other sites' requests.
        unreadable = await self.site.readForm(request, None, LOGIN_MAX_BODY)
        if unreadable is not None:
            return unreadable
        next = safe_next(form(request, "next"))
        password = form(request, "password", strip=False)
        if not password:
            return Redirect(login_url(next, failed="1"))
        try:
            ok = await self.site.auth.checkFrom(request, password)
        except Throttled as e:
            page = await self.loginPage(request, next, [("error", str(e))], status=429)
            page.retryAfter = e.retryAfter
            return page
        if not ok:
            log.warn("A wrong admin password was given on the login page")
            return Redirect(login_url(next, failed="1"))
        old = request.getCookie(COOKIE)
        if old:
            self.site.sessions.end(old.decode("ascii", "replace"))
        session = self.site.sessions.start()
        self.site.sessions.setCookie(request, session)
        return Redirect(next)


class LogoutPage(SiteResource):
    """``/logout``: ``GET`` asks, ``POST`` (with the CSRF token) ends the session."""

    async def _get(self, request: server.Request) -> Answer:
        session = self.site.sessions.fromRequest(request)
        if session is None:
            return Redirect("/login")
        return await self.site.page(
            request,
            title="Log out",
            content=elements.LogoutElement(session.csrf),
            session=session,
        )

    async def _post(self, request: server.Request) -> Answer:
        session = self.site.sessions.fromRequest(request)
        if session is not None:
            unreadable = await self.site.readForm(request, session)
            if unreadable is not None:
                return unreadable
            if not session.csrfMatches(form(request, CSRF_FIELD)):
                return await self.site.forbidden(request, session)
            self.site.sessions.end(session.id)
        self.site.sessions.clearCookie(request)
        return Redirect(login_url(out="1"))


class Home(resource.Resource):
    """``/``: to the License Pool, or to Messages on a standby failover."""

    isLeaf = True

    def __init__(self, site: WebSite):
        super().__init__()
        self.site = site

    def render_GET(self, request: server.Request) -> Any:
        async def home(request: server.Request) -> Answer:
            if request.postpath not in ([], [b""]):
                return await _notFound(self.site, request)
            return Redirect("/" + display.home_tab(self.site.view))

        return self.site.serve(request, home)


async def _notFound(site: WebSite, request: server.Request) -> Html:
    session = site.sessions.fromRequest(request)
    return await site.page(
        request,
        title="Not found",
        content="",
        session=session,
        status=404,
        notices=[("error", "There is no such page.")],
    )


class StaticFiles(static.File):
    """The stylesheet and the status script; no directory listings."""

    def directoryListing(self) -> resource.Resource:
        return resource.NoResource()


PAGES: tuple[type[Page], ...] = (
    PoolPage,
    ClientsPage,
    MonitoringPage,
    UsagePage,
    MessagesPage,
    SettingsPage,
)


def addPages(root: resource.Resource, site: WebSite) -> None:
    """Put the pages, ``/login``, ``/logout``, ``/static/``, the icon and ``/`` under ``root``."""
    for page in PAGES:
        root.putChild(page.name.encode("ascii"), page(site))
    root.putChild(b"login", LoginPage(site))
    root.putChild(b"logout", LogoutPage(site))
    root.putChild(b"static", StaticFiles(STATIC.path))
    # Browsers ask for /favicon.ico whatever the page links; answer with the same icon.
    root.putChild(b"favicon.ico", static.File(STATIC.child("favicon.svg").path))
    root.putChild(b"", Home(site))
