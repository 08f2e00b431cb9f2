"""The pages' twisted.web.template Elements; their markup is in ``templates/*.xhtml``.

``PageElement`` lays out every page: the status header (``HeaderElement``),
the tabs, the notices of the last action and one content Element. The
content Elements take the view (a ``ServerView``, or plain values) and the
session's CSRF token, which every form carries. Values go into the markup through slots and
attributes only, so the template engine escapes all of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.python.filepath import FilePath
from twisted.web.template import Element, Tag, TagLoader, XMLFile, renderer, tags

from licenseserver import allocation
from licenseserver._version import __version__
from licenseserver.model import CONCURRENT
from licenseserver.web import charts, display, views
from licenseserver.web.facade import ServerView

TEMPLATES = FilePath(__file__).sibling("templates")


def template(name: str) -> XMLFile:
    """The template ``templates/NAME.xhtml``."""
    return XMLFile(TEMPLATES.child(f"{name}.xhtml"))


def capable_mark(capable: bool) -> Tag:
    """The failover-capable mark of a client, product or lease."""
    if capable:
        return tags.span("failover-capable", class_="mark-yes")
    return tags.span("not failover-capable", class_="mark-no")


class FormPart(Element):
    """An Element whose ``<input t:render="csrf">`` fields get the session's CSRF token."""

    def __init__(self, token: str = "", loader: Any = None):
        super().__init__(loader)
        self.token = token

    @renderer
    def csrf(self, request: Any, tag: Tag) -> Tag:
        return tag(value=self.token)


class HeaderElement(FormPart):
    """The status header of every page (FAILOVER.md rule 4)."""

    loader = template("header")

    def __init__(self, facts: display.HeaderFacts, token: str | None = None):
        super().__init__(token or "")
        self.facts = facts
        self.loggedIn = token is not None

    @renderer
    def header(self, request: Any, tag: Tag) -> Tag:
        f = self.facts
        tag(**{"data-role": f.role, "data-state": f.state})
        return tag.fillSlots(
            hdrName=f.name,
            hdrRole=f.role,
            hdrState=f.state,
            hdrVersion=f.version,
            hdrPeerTitle=f.peer_title,
        )

    @renderer
    def logout(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.loggedIn else ""

    @renderer
    def peerFact(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(
                factLabel=fact.label, factValue=fact.value, factTone=fact.tone or "plain"
            )
            for fact in self.facts.peer
        ]

    @renderer
    def problem(self, request: Any, tag: Tag) -> Tag | str:
        if not self.facts.problem:
            return ""
        return tag.fillSlots(hdrProblem=self.facts.problem)

    @renderer
    def warnings(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.loggedIn and self.facts.warnings else ""

    @renderer
    def warning(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(warnText=w.text, warnTab=w.tab) if w.tab else tags.li(w.text)
            for w in self.facts.warnings
        ]


class PageElement(FormPart):
    """One whole page: header, tabs (``current`` marked), notices, ``title`` and ``content``.

    ``tabs`` are ``(name, title)`` pairs; ``token`` is None before login.
    """

    loader = template("page")

    def __init__(
        self,
        *,
        title: str,
        facts: display.HeaderFacts,
        content: Any,
        tabs: Sequence[tuple[str, str]] = (),
        current: str = "",
        notices: Sequence[tuple[str, str]] = (),
        token: str | None = None,
    ):
        super().__init__(token or "")
        self.title = title
        self.facts = facts
        self.content_ = content
        self.tabs_ = list(tabs)
        self.current = current
        self.notices_ = list(notices)
        self.loggedIn = token is not None

    @renderer
    def page(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(
            pageTitle=self.title, pageServer=self.facts.name, pageVersion=__version__
        )

    @renderer
    def csrfMeta(self, request: Any, tag: Tag) -> Tag | str:
        return tag(content=self.token) if self.loggedIn else ""

    @renderer
    def header(self, request: Any, tag: Tag) -> Element:
        return HeaderElement(self.facts, self.token if self.loggedIn else None)

    @renderer
    def tabs(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.tabs_ else ""

    @renderer
    def tab(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(
                tabName=name, tabTitle=title, tabCurrent="current" if name == self.current else ""
            )
            for name, title in self.tabs_
        ]

    @renderer
    def notices(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.notices_ else ""

    @renderer
    def notice(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(noticeKind=kind, noticeText=text) for kind, text in self.notices_
        ]

    @renderer
    def content(self, request: Any, tag: Tag) -> Any:
        return self.content_


class LoginElement(Element):
    """The login form; ``next`` is the page to go to after it."""

    loader = template("login")

    def __init__(self, next: str = "/"):
        super().__init__()
        self.next = next

    @renderer
    def login(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(next=self.next)


class LogoutElement(FormPart):
    """The logout button of ``GET /logout``."""

    loader = template("logout")


class StandbyElement(Element):
    """What a pool tab says on a standby failover: make changes on the primary."""

    loader = template("standby")

    def __init__(self, view: ServerView, tabTitle: str):
        super().__init__()
        self.view = view
        self.tabTitle = tabTitle

    @renderer
    def standby(self, request: Any, tag: Tag) -> Tag:
        peer = self.view.peerStatus() or {}
        return tag.fillSlots(
            tab=self.tabTitle,
            primaryName=peer.get("name") or "(name not known yet)",
            primary=self.view.primaryAddress() or "?",
        )


POLICY_SOURCES = {"license": "set by the license", "settings": "from the Settings tab"}
"""Where a license's partition policy comes from, for the License Pool's tooltip."""


def select_options(tag: Tag, labels: dict[str, str], chosen: str | None) -> Tag:
    """A ``<select>`` filled with an option per value (with its label), ``chosen`` selected."""
    options = []
    for value, label in labels.items():
        option = tags.option(label, value=value)
        if value == chosen:
            option(selected="selected")
        options.append(option)
    return tag(*options)


def days_left(days: int | None) -> str:
    """A license's days until it ends, for License Pool: "", "today", "1 day", "ended"."""
    if days is None:
        return ""
    if days < 0:
        return "ended"
    if days == 0:
        return "last day"
    return f"{days} day{'' if days == 1 else 's'} left"


def policy_text(lic: dict[str, Any]) -> str:
    """A license's partition policy for people: ``exact, 2 held for the failover`` or ``full``."""
    if lic["partition_policy"] == allocation.EXACT:
        return f"exact, {lic['failover_share']} held for the failover"
    return lic["partition_policy"]


def cut_limit_mark(lic: dict[str, Any]) -> Tag | str:
    """The limit in force during a cut (FAILOVER.md rule 19), for the License Pool."""
    if lic["serving_at_most"] is None:
        return ""
    return tags.span(
        f" serving at most {lic['serving_at_most']} of {lic['seats']} while cut off",
        class_="mark-warn cut-limit",
    )


class PoolElement(FormPart):
    """License Pool: upload, and each license with status, seats, dates and actions."""

    loader = template("pool")

    def __init__(self, view: ServerView, token: str):
        super().__init__(token)
        self.view = view
        self.licenses = views.licenses(view)

    @renderer
    def summary(self, request: Any, tag: Tag) -> Tag | str:
        if not self.licenses:
            return ""
        seats = sum(lic["seats"] for lic in self.licenses)
        used = sum(lic["in_use"] for lic in self.licenses)
        return tag(f"({len(self.licenses)}; {used} of {seats} seats in use)")

    @renderer
    def empty(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.licenses else tag

    @renderer
    def table(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.licenses else ""

    @renderer
    def license(self, request: Any, tag: Tag) -> list[Tag]:
        rows = []
        for lic in self.licenses:
            active = lic["active"]
            rows.append(
                tag.clone().fillSlots(
                    id=lic["id"],
                    product=lic["product"],
                    edition=lic["edition"] or "—",
                    kind=lic["kind"],
                    cores=f" ({lic['cores']} cores)" if lic["cores"] else "",
                    status=lic["status"],
                    expiring=[
                        tags.span(" expires soon", class_="mark-warn") if lic["expiring"] else "",
                        tags.span(f" over-allocated by {lic['over_allocated']}", class_="mark-no")
                        if lic["over_allocated"]
                        else "",
                    ],
                    in_use=str(lic["in_use"]),
                    seats=str(lic["seats"]),
                    policy=policy_text(lic),
                    cutLimit=cut_limit_mark(lic),
                    policySource=POLICY_SOURCES[lic["policy_source"]],
                    starts=lic["starts"] or "—",
                    expires=lic["expires"] or "never",
                    daysLeft=days_left(lic["days_to_expiry"]),
                    max_version=lic["max_version"] or "any",
                    licensee=lic["licensee"] or "—",
                    assigned=", ".join(lic["assigned"]) or "—",
                    toggle="deactivate" if active else "activate",
                    toggleLabel="Deactivate" if active else "Activate",
                    agreement=tags.span("agreement accepted", class_="mark-yes")
                    if lic["agreement"]
                    else tags.button(
                        "Accept agreement", type="submit", name="action", value="accept"
                    ),
                )
            )
        return rows


class ClientsElement(FormPart):
    """Client Management: registered machines, their products and assigned licenses."""

    loader = template("clients")

    def __init__(self, view: ServerView, token: str):
        super().__init__(token)
        self.view = view
        self.clients = views.clients(view)

    @renderer
    def empty(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.clients else tag

    @renderer
    def table(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.clients else ""

    @renderer
    def client(self, request: Any, tag: Tag) -> list[Element]:
        now = self.view.now()
        out = []
        for c in self.clients:
            filled = tag.clone().fillSlots(
                id=c["id"],
                host=c["host"],
                machine=c["machine"],
                registered=display.timestamp(c["registered"]),
                last_seen=display.ago(c["last_seen"], now),
                capable=capable_mark(c["failover_capable"]),
            )
            out.append(ClientElement(self.view, c, self.token, TagLoader(filled)))
        return out


class ClientElement(FormPart):
    """The rows of one registered machine in Client Management."""

    def __init__(self, view: ServerView, client: dict[str, Any], token: str, loader: Any):
        super().__init__(token, loader)
        self.view = view
        self.client = client

    @renderer
    def product(self, request: Any, tag: Tag) -> list[Element]:
        out = []
        for p in self.client["products"]:
            filled = tag.clone().fillSlots(
                client=self.client["id"],
                product=p["product"],
                version=p["version"],
                user=p["user"],
                cores=str(p["cores"]),
                capable=capable_mark(p["failover_capable"]),
            )
            out.append(
                ProductElement(self.view, self.client["id"], p, self.token, TagLoader(filled))
            )
        return out


class ProductElement(FormPart):
    """One product of a machine: its assigned licenses and the licenses it could get."""

    def __init__(
        self, view: ServerView, client: str, product: dict[str, Any], token: str, loader: Any
    ):
        super().__init__(token, loader)
        self.view = view
        self.clientId = client
        self.product = product

    def choices(self) -> list[dict[str, Any]]:
        """Licenses of this product that could be assigned here (not concurrent, not yet)."""
        have = set(self.product["licenses"])
        now = self.view.now()
        out = []
        for lic in sorted(self.view.licensesFor(self.product["product"]), key=_by_id):
            if lic.kind == CONCURRENT or lic.id in have:
                continue
            holders = {a.client for a in self.view.assignmentsOfLicense(lic.id)}
            status = allocation.license_status(lic, now)
            label = f"{lic.id} · {lic.kind} · {len(holders)}/{lic.seats} machines"
            if status != allocation.ACTIVE:
                label += f" · {status}"
            out.append({"id": lic.id, "label": label})
        return out

    @renderer
    def assigned(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.product["licenses"] else "—"

    @renderer
    def assignment(self, request: Any, tag: Tag) -> list[Tag]:
        return [tag.clone().fillSlots(license=lid) for lid in self.product["licenses"]]

    @renderer
    def assign(self, request: Any, tag: Tag) -> Any:
        if not self.choices():
            return tags.span("no license to assign", class_="muted")
        return tag

    @renderer
    def choice(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(choiceId=c["id"], choiceLabel=c["label"]) for c in self.choices()
        ]


def _by_id(lic: Any) -> str:
    return lic.id


class MonitoringElement(FormPart):
    """Client Monitoring: running leases with heartbeat age, and checked-out seats; each
    with a form that frees its seat (the admin confirms with a tick)."""

    loader = template("monitoring")

    def __init__(self, view: ServerView, token: str):
        super().__init__(token)
        self.view = view
        self.now = view.now()
        leases = views.leases(view)
        self.runningLeases = [item for item in leases if not item["borrowed"]]
        self.borrowedLeases = [item for item in leases if item["borrowed"]]

    @renderer
    def runningCount(self, request: Any, tag: Tag) -> Tag:
        return tag(f"({len(self.runningLeases)})")

    @renderer
    def borrowedCount(self, request: Any, tag: Tag) -> Tag:
        return tag(f"({len(self.borrowedLeases)})")

    @renderer
    def noRunning(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.runningLeases else tag

    @renderer
    def noBorrowed(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.borrowedLeases else tag

    @renderer
    def runningTable(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.runningLeases else ""

    @renderer
    def borrowedTable(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.borrowedLeases else ""

    def _common(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": item["id"],
            "product": item["product"],
            "version": item["version"],
            "host": item["host"] or "—",
            "machine": item["machine"],
            "user": item["user"],
            "licenses": ", ".join(item["licenses"]),
            "granted": display.timestamp(item["granted"]),
            "capable": capable_mark(item["failover_capable"]),
        }

    @renderer
    def running(self, request: Any, tag: Tag) -> list[Tag]:
        rows = []
        for item in self.runningLeases:
            last_beat = item["expires"] - item["ttl"]
            rows.append(
                tag.clone().fillSlots(
                    heartbeat=display.ago(last_beat, self.now),
                    left=display.duration(item["ttl_left"]),
                    **self._common(item),
                )
            )
        return rows

    @renderer
    def borrowed(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(until=display.timestamp(item["expires"]), **self._common(item))
            for item in self.borrowedLeases
        ]


class MessagesElement(Element):
    """Messages: events, newest first."""

    loader = template("messages")

    def __init__(self, events: Sequence[Any], limit: int):
        super().__init__()
        self.events = list(events)
        self.limit_ = limit

    @renderer
    def empty(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.events else tag

    @renderer
    def table(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.events else ""

    @renderer
    def event(self, request: Any, tag: Tag) -> list[Tag]:
        return [
            tag.clone().fillSlots(
                time=display.timestamp(e.time),
                severity=e.severity,
                kind=e.kind,
                message=e.message,
            )
            for e in self.events
        ]

    @renderer
    def limit(self, request: Any, tag: Tag) -> Tag | str:
        return tag.fillSlots(limit=str(self.limit_)) if len(self.events) >= self.limit_ else ""


POLICY_LABELS = {
    allocation.FULL: "full: both servers may serve every seat (up to twice the seats in use)",
    allocation.EXACT: "exact: never more seats in use than licensed",
}
"""The Settings tab's choices of ``partition_policy`` (FAILOVER.md rule 15)."""


class SettingsElement(FormPart):
    """Settings: the failover mode, the lease and borrow limits, the admin password."""

    loader = template("settings")

    def __init__(self, view: ServerView, token: str, form: dict[str, str] | None = None):
        super().__init__(token)
        self.view = view
        self.values = view.settings()
        self.mode = view.mode()
        self.form = form or {}

    @renderer
    def alertFields(self, request: Any, tag: Tag) -> Tag:
        values = self.values
        return tag.fillSlots(
            host=str(values.get("alert_smtp_host", "")),
            port=str(values.get("alert_smtp_port", "")),
            user=str(values.get("alert_smtp_user", "")),
            passwordState="set" if values.get("alert_smtp_password_set") else "not set",
            sender=str(values.get("alert_from", "")),
            recipients=", ".join(values.get("alert_to") or []),
        )

    @renderer
    def tlsOptions(self, request: Any, tag: Tag) -> Tag:
        labels = {"none": "none", "starttls": "STARTTLS (required)", "tls": "TLS (port 465)"}
        return select_options(tag, labels, self.values.get("alert_smtp_tls", "none"))

    @renderer
    def policyText(self, request: Any, tag: Tag) -> Tag:
        text = self.form.get("policy")
        if text is None:
            text = json.dumps(self.view.seatPolicy(), indent=1)
        return tag(text)

    @renderer
    def policyRules(self, request: Any, tag: Tag) -> Tag:
        current = self.view.seatPolicy()
        if not current["rules"]:
            return tags.p(
                "No seat policy: every user and host may use every seat.", class_="empty"
            )
        groups = current["groups"]
        rows = []
        for rule in current["rules"]:
            members = groups.get(rule["group"], {})
            who = ", ".join([*members.get("users", []), *members.get("hosts", [])])
            count = str(rule.get("count", "")) if "count" in rule else ""
            rows.append(
                tags.tr(
                    tags.td(rule["product"]),
                    tags.td(rule["kind"]),
                    tags.td(count, class_="number"),
                    tags.td(rule["group"]),
                    tags.td(who),
                )
            )
        head = tags.tr(*(tags.th(t) for t in ("Product", "Rule", "Seats", "Group", "Members")))
        return tag(tags.thead(head), tags.tbody(*rows))

    @renderer
    def settings(self, request: Any, tag: Tag) -> Tag:
        mode = self.mode
        if mode["role"] == "failover":
            text = f"failover of {mode['primary']}"
        else:
            text = "primary"
        minimums = self.values.get("failover_minimums") or {}
        return tag.fillSlots(
            mode=text,
            primary=self.form.get("primary", mode["primary"] or ""),
            lease_ttl=str(self.values.get("lease_ttl", "")),
            borrow_max_days=str(self.values.get("borrow_max_days", "")),
            failover_share=str(self.values.get("failover_share", "")),
            alert_expiry_days=str(self.values.get("alert_expiry_days", "")),
            minimums=display.minimums_text(minimums),
        )

    @renderer
    def primaryChecked(self, request: Any, tag: Tag) -> Tag:
        return tag(checked="checked") if self.mode["role"] == "primary" else tag

    @renderer
    def failoverChecked(self, request: Any, tag: Tag) -> Tag:
        return tag(checked="checked") if self.mode["role"] == "failover" else tag

    @renderer
    def borrowChecked(self, request: Any, tag: Tag) -> Tag:
        if self.view.roleName == "failover":
            return tag(disabled="disabled")  # a failover never lends: PROTOCOL.md, BORROW
        return tag(checked="checked") if self.values.get("borrow_enabled") else tag

    @renderer
    def policyOption(self, request: Any, tag: Tag) -> list[Tag]:
        chosen = self.values.get("partition_policy")
        out = []
        for policy in allocation.PARTITION_POLICIES:
            option = tag.clone().fillSlots(policyValue=policy, policyLabel=POLICY_LABELS[policy])
            out.append(option(selected="selected") if policy == chosen else option)
        return out

    @renderer
    def unpair(self, request: Any, tag: Tag) -> Tag | str:
        """The unpair form, on a primary that has a failover (paired or remembered); a
        failover has none."""
        address = self.view.failoverAddress()
        if address is None:
            return ""
        peer = self.view.peerStatus()
        name = f"{peer['name']} ({address})" if peer is not None else address
        return tag.fillSlots(failover=name)

    @renderer
    def borrowNote(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.view.roleName == "failover" else ""

    @renderer
    def vendorKey(self, request: Any, tag: Tag) -> list[Tag]:
        sources = {"configured": "at start (data directory or --vendor-key)", "added": "added"}
        return [
            tag.clone().fillSlots(keyId=key["id"], keySource=sources[key["source"]])
            for key in self.view.vendorKeys()
        ]

    @renderer
    def noVendorKeys(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.view.vendorKeys() else tag

    @renderer
    def syncedNote(self, request: Any, tag: Tag) -> Tag | str:
        return tag if display.standby(self.view) else ""

    @renderer
    def licensingFields(self, request: Any, tag: Tag) -> Tag:
        return tag(disabled="disabled") if display.standby(self.view) else tag


class UsageElement(Element):
    """Usage: a product's seats in use and refused requests over a period, as charts, with
    its top users and machines by seat hours and the history as CSV."""

    loader = template("usage")

    def __init__(self, report: dict[str, Any]):
        super().__init__()
        self.report = report

    @renderer
    def productOptions(self, request: Any, tag: Tag) -> Tag:
        products = self.report["products"]
        return select_options(tag, {p: p for p in products}, self.report["product"])

    @renderer
    def periodOptions(self, request: Any, tag: Tag) -> Tag:
        periods = {period: period for period in display.USAGE_PERIODS}
        return select_options(tag, periods, self.report["period"])

    @renderer
    def problem(self, request: Any, tag: Tag) -> Tag | str:
        return tag(self.report["problem"]) if self.report["problem"] else ""

    @renderer
    def noProduct(self, request: Any, tag: Tag) -> Tag | str:
        return "" if self.report["product"] else tag

    @renderer
    def charts(self, request: Any, tag: Tag) -> Tag | str:
        return tag if self.report["product"] else ""

    @renderer
    def what(self, request: Any, tag: Tag) -> Tag:
        r = self.report
        return tag(f"({r['product']}, the last {r['period']}, {r['seats']} seats licensed)")

    @renderer
    def seatsChart(self, request: Any, tag: Tag) -> Tag:
        r = self.report
        return tag(charts.seats_chart(r["samples"], r["seats"], r["since"], r["until"], r["step"]))

    @renderer
    def denialsChart(self, request: Any, tag: Tag) -> Tag:
        r = self.report
        return tag(charts.denials_chart(r["samples"], r["since"], r["until"], r["step"]))

    @renderer
    def csvLink(self, request: Any, tag: Tag) -> Tag:
        return tag(href=self.report["csv"])

    def _top(self, tag: Tag, who: str, rows: list[tuple[str, float]]) -> Tag:
        if not rows:
            return tags.p(f"No {who} held a seat in the period.", class_="empty")
        body = [
            tags.tr(tags.td(name), tags.td(f"{hours:g}", class_="number")) for name, hours in rows
        ]
        return tag(
            tags.thead(tags.tr(tags.th(who.capitalize()), tags.th("Seat hours"))),
            tags.tbody(*body),
        )

    @renderer
    def topUsers(self, request: Any, tag: Tag) -> Tag:
        return self._top(tag, "user", self.report["users"])

    @renderer
    def topMachines(self, request: Any, tag: Tag) -> Tag:
        return self._top(tag, "machine", self.report["machines"])
