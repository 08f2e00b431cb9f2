"""The web endpoint's resource tree: health, the admin API and the configuration pages."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web import resource, server

from licenseserver.web.api import AdminAPI
from licenseserver.web.auth import AdminAuth
from licenseserver.web.facade import ServerView
from licenseserver.web.pages import WebSite, addPages


class Health(resource.Resource):
    """``/healthz``: 200 while the process serves its role, 503 otherwise."""

    isLeaf = True

    def __init__(self, view: ServerView):
        super().__init__()
        self.view = view

    def render_GET(self, request: server.Request) -> bytes:
        ok = self.view.serving()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        body = {"ok": ok, "role": self.view.roleName, "state": self.view.state}
        return json.dumps(body).encode() + b"\n"


def buildRoot(
    view: ServerView,
    auth: AdminAuth,
    setPassword: Callable[[str], None] | None = None,
    runInThread: Callable[..., Awaitable[Any]] | None = None,
) -> resource.Resource:
    """The root resource of the web endpoint.

    ``setPassword`` stores a new admin password for the Settings tab; see ``WebSite``.
    """
    root = resource.Resource()
    root.putChild(b"healthz", Health(view))
    root.putChild(b"api", AdminAPI(view, auth))
    addPages(root, WebSite(view, auth, setPassword, runInThread))
    return root
