"""The admin HTTP API: JSON in and out; Basic auth or a browser session for the admin.

``AdminAPI`` is one leaf resource that routes ``METHOD /api/...`` to a
handler by pattern. Handlers return ``(status, body)``; an ``AdminError``
becomes its status with ``{"error": message}``, any other exception a
``500`` with nothing of the server's internals in it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from licenseserver import jsonparse, usage
from licenseserver.roles.base import AdminError
from licenseserver.switch import check_mode
from licenseserver.web import display, views
from licenseserver.web.auth import AdminAuth, admin_of
from licenseserver.web.facade import ServerView

Handler = Callable[..., Any]


class AdminAPI(resource.Resource):
    """``/api/...``: the admin API of one server."""

    isLeaf = True
    log = Logger()

    def __init__(self, view: ServerView, auth: AdminAuth):
        super().__init__()
        self.view = view
        self.auth = auth
        self.routes: list[tuple[str, re.Pattern, bool, Handler]] = []
        add = self._route
        add("GET", r"status", False, self.getStatus)
        add("GET", r"licenses", True, self.getLicenses)
        add("POST", r"licenses", True, self.postLicenses)
        add("POST", r"licenses/([^/]+)/(activate|deactivate)", True, self.postActivate)
        add("POST", r"licenses/([^/]+)/agreement", True, self.postAgreement)
        add("DELETE", r"licenses/([^/]+)", True, self.deleteLicense)
        add("GET", r"clients", True, self.getClients)
        add("PUT", r"clients/([^/]+)/products/([^/]+)/licenses", True, self.putAssignment)
        add("DELETE", r"clients/([^/]+)", True, self.deleteClient)
        add("GET", r"leases", True, self.getLeases)
        add("DELETE", r"leases/([^/]+)", True, self.deleteLease)
        add("GET", r"vendor-keys", True, self.getVendorKeys)
        add("POST", r"vendor-keys", True, self.postVendorKey)
        add("POST", r"alerts/test", True, self.postTestAlert)
        add("GET", r"policy", True, self.getPolicy)
        add("PUT", r"policy", True, self.putPolicy)
        add("GET", r"usage", True, self.getUsage)
        add("GET", r"usage\.csv", True, self.getUsageCSV)
        add("GET", r"denials", True, self.getDenials)
        add("GET", r"messages", True, self.getMessages)
        add("GET", r"settings", True, self.getSettings)
        add("PUT", r"settings", True, self.putSettings)
        add("DELETE", r"failover", True, self.deleteFailover)

    def _route(self, method: str, pattern: str, admin: bool, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern + r"\Z"), admin, handler))

    def render(self, request: server.Request) -> Any:
        path = request.path.decode("ascii", "replace").split("?", 1)[0]
        tail = path.removeprefix("/api/").strip("/")
        method = request.method.decode("ascii", "replace")
        allowed = []
        for route_method, pattern, admin, handler in self.routes:
            match = pattern.match(tail)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            args = [unquote(g) for g in match.groups()]
            gone: list[Any] = []
            request.notifyFinish().addErrback(gone.append)
            d = defer.ensureDeferred(self._serve(request, admin, handler, args))
            d.addErrback(self._unexpected, request)
            d.addCallback(_finish, request, gone)
            return server.NOT_DONE_YET
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return _json(request, 405, {"error": f"{method} is not allowed here"})
        return _json(request, 404, {"error": f"no such API path: /api/{tail}"})

    async def _serve(
        self, request: server.Request, admin: bool, handler: Handler, args: list[str]
    ) -> tuple[int, Any]:
        if admin:
            refused = await self.auth.refusal(request)
            if refused is not None:
                if refused.status == 401:
                    request.setHeader(b"www-authenticate", b'Basic realm="licenseserver"')
                if refused.retryAfter is not None:
                    request.setHeader(b"retry-after", str(refused.retryAfter).encode())
                return refused.status, {"error": refused.message}
        try:
            return await handler(request, *args)
        except AdminError as e:
            body = {"error": e.message}
            if e.reason:
                body["reason"] = e.reason
            return e.status, body

    def _unexpected(self, failure: Any, request: server.Request) -> tuple[int, Any]:
        self.log.failure("Admin API request failed", failure)
        return 500, {"error": "internal error; see the server log"}

    # Handlers

    async def getStatus(self, request: server.Request) -> tuple[int, Any]:
        return 200, views.status(self.view)

    async def getLicenses(self, request: server.Request) -> tuple[int, Any]:
        return 200, views.licenses(self.view)

    def changed(self, status: int, body: dict[str, Any]) -> tuple[int, Any]:
        """The answer to a change; on an active failover it warns that the change will not last."""
        warning = display.discarded_at_handback(self.view)
        if warning:
            body = {**body, "warning": warning}
        return status, body

    async def postLicenses(self, request: server.Request) -> tuple[int, Any]:
        ids = await self.view.addLicenses(_body(request))
        body: dict[str, Any] = {"ids": ids}
        warnings = views.upload_warnings(self.view, ids)
        if warnings:
            body["warnings"] = warnings
        return self.changed(201, body)

    async def postActivate(
        self, request: server.Request, license_id: str, action: str
    ) -> tuple[int, Any]:
        await self.view.setLicenseActive(license_id, action == "activate")
        return self.changed(200, views.license(self.view, self.view.license(license_id)))

    async def postAgreement(self, request: server.Request, license_id: str) -> tuple[int, Any]:
        """Accept the license agreement of a license, as the admin."""
        await self.view.acceptAgreement(license_id)
        return self.changed(200, views.license(self.view, self.view.license(license_id)))

    async def deleteLicense(self, request: server.Request, license_id: str) -> tuple[int, Any]:
        await self.view.deleteLicense(license_id)
        return self.changed(200, {"deleted": license_id})

    async def getClients(self, request: server.Request) -> tuple[int, Any]:
        return 200, views.clients(self.view)

    async def putAssignment(
        self, request: server.Request, client_id: str, product: str
    ) -> tuple[int, Any]:
        self.view.gateAdmin()  # a standby says where to go before it reads the body
        body = _jsonBody(request)
        licenses = body.get("licenses") if isinstance(body, dict) else None
        if not isinstance(licenses, list) or not all(isinstance(i, str) for i in licenses):
            raise AdminError(400, 'the body must be {"licenses": [license ids]}')
        await self.view.assign(client_id, product, licenses)
        return self.changed(200, views.client(self.view, self.view.client(client_id)))

    async def deleteClient(self, request: server.Request, client_id: str) -> tuple[int, Any]:
        await self.view.unregister(client_id)
        return self.changed(200, {"deleted": client_id})

    async def getLeases(self, request: server.Request) -> tuple[int, Any]:
        return 200, views.leases(self.view)

    async def deleteLease(self, request: server.Request, lease_id: str) -> tuple[int, Any]:
        """End a live or borrowed lease at once; its holder's next HEARTBEAT gets 410."""
        await self.view.revokeLease(lease_id, **admin_of(request, "api"))
        return self.changed(200, {"revoked": lease_id})

    async def postTestAlert(self, request: server.Request) -> tuple[int, Any]:
        """Send a test e-mail with the alert settings: 200, or 502 with what went wrong."""
        return 200, {"sent": await self.view.sendTestAlert()}

    async def getPolicy(self, request: server.Request) -> tuple[int, Any]:
        return 200, self.view.seatPolicy()

    async def putPolicy(self, request: server.Request) -> tuple[int, Any]:
        """Replace the seat policy; 400 with the reason for one that does not check out."""
        self.view.gateAdmin()
        return self.changed(200, await self.view.setSeatPolicy(_jsonBody(request)))

    async def _usage(self, request: server.Request) -> tuple[usage.Query, list[usage.Point]]:
        args = _queryArgs(request)
        try:
            query = usage.parse_query(args, self.view.now())
        except usage.QueryError as e:
            raise AdminError(400, str(e)) from None
        product = args.get("product") or None
        points = await self.view.usageHistory(query.step, query.since, query.until, product)
        return query, points

    async def getUsage(self, request: server.Request) -> tuple[int, Any]:
        """The usage history: ``step``, ``from``, ``to``, ``product`` (all optional)."""
        query, points = await self._usage(request)
        return 200, views.usage(self.view, query, points)

    async def getUsageCSV(self, request: server.Request) -> tuple[int, Any]:
        """The same as CSV, a download: ``t,product,license,in_use,peak,denials``."""
        query, points = await self._usage(request)
        return 200, Download(b"text/csv; charset=utf-8", views.usage_csv(points), "usage.csv")

    async def getDenials(self, request: server.Request) -> tuple[int, Any]:
        """Refused requests, newest first: ``from`` and ``to`` as for the usage history."""
        args = _queryArgs(request)
        try:
            query = usage.parse_query({**args, "step": "1m"}, self.view.now())
        except usage.QueryError as e:
            raise AdminError(400, str(e)) from None
        denials = await self.view.deniedRequests(query.since, query.until, DENIALS_SHOWN)
        return 200, [dataclasses.asdict(denial) for denial in denials]

    async def getVendorKeys(self, request: server.Request) -> tuple[int, Any]:
        return 200, self.view.vendorKeys()

    async def postVendorKey(self, request: server.Request) -> tuple[int, Any]:
        """Trust one more vendor public key (PEM, any content type) at once: 201, or 200
        when it was trusted already."""
        key, new = await self.view.addVendorKey(_body(request))
        if not new:
            return 200, {"id": key, "trusted_already": True}
        return self.changed(201, {"id": key})

    async def getMessages(self, request: server.Request) -> tuple[int, Any]:
        events = await self.view.events(500)
        return 200, [views.event(e) for e in events]

    async def getSettings(self, request: server.Request) -> tuple[int, Any]:
        return 200, views.settings(self.view)

    async def putSettings(self, request: server.Request) -> tuple[int, Any]:
        """Change licensing settings and/or the failover mode (``role``, ``primary``)."""
        body = _jsonBody(request)
        if not isinstance(body, dict):
            raise AdminError(400, "the body must be a JSON object of settings")
        mode = {k: body.pop(k) for k in ("role", "primary") if k in body}
        if mode:
            # A mode that will not do refuses the whole request, before any setting changes.
            role = mode.get("role", self.view.roleName)
            primary = check_mode(role, mode.get("primary"))
        if body:
            await self.view.updateSettings(body)
        if mode:
            await self.view.switchTo(role, primary)
        if body:
            return self.changed(200, views.settings(self.view))
        return 200, views.settings(self.view)

    async def deleteFailover(self, request: server.Request) -> tuple[int, Any]:
        """Unpair this primary's failover (FAILOVER.md rule 16): the exact limits are
        lifted. Nothing to unpair is no error; a failover answers 409."""
        return 200, {"unpaired": await self.view.unpair()}


def _body(request: server.Request) -> bytes:
    """The request's body; the site has bounded it (``--web-max-body``) already."""
    request.content.seek(0)
    return request.content.read()


def _jsonBody(request: server.Request) -> Any:
    """The body as JSON, read strictly (``jsonparse``): 400 with the reason otherwise."""
    try:
        return jsonparse.loads(_body(request))
    except ValueError as e:
        raise AdminError(400, f"bad JSON body: {e}") from None


DENIALS_SHOWN = 10_000
"""The most refused requests one answer of ``/api/denials`` lists (the newest)."""


@dataclass(frozen=True)
class Download:
    """An answer that is a file to save, not JSON."""

    contentType: bytes
    data: bytes
    filename: str


def _queryArgs(request: server.Request) -> dict[str, str]:
    """The query string's arguments, each its first value, as text."""
    return {
        key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
        for key, values in (request.args or {}).items()
        if values
    }


def _json(request: server.Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


def _finish(result: tuple[int, Any], request: server.Request, gone: list) -> None:
    """Write the handler's answer, unless the client has gone already."""
    if gone:
        return
    status, body = result
    if isinstance(body, Download):
        request.setResponseCode(status)
        request.setHeader(b"content-type", body.contentType)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-disposition", f'attachment; filename="{body.filename}"'.encode()
        )
        request.write(body.data)
    else:
        request.write(_json(request, status, body))
    request.finish()
