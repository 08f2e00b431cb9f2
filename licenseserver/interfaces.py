"""The interfaces between the parts of the server: what each offers, not how."""

from zope.interface import Attribute, Interface


class ILicenseStore(Interface):
    """Durable storage of the license pool, its revision and its change log.

    Every method returns a Deferred; none blocks the reactor thread. A
    Deferred returned by a writing method fires only once the write is
    durable, and errbacks (with nothing written) when it is not.
    """

    def load():
        """Fire with a ``Snapshot`` of everything stored: records and revision."""

    def commit(revision, changes, audit=(), patient=False):
        """Apply ``changes`` (a list of ``model.Change``) as one atomic step.

        The store's revision becomes ``revision`` and the changes are
        appended to the change log under it; the ``audit.AuditEntry`` items
        of ``audit`` are appended to the audit chain in the same step. A
        ``patient`` commit may wait a little to share a transaction.
        """

    def audit(entries):
        """Append ``audit.AuditEntry`` items to the hash-chained audit log."""

    def changesSince(revision):
        """Fire with ``[(revision, [Change, ...]), ...]`` after ``revision``.

        Ordered by revision. Fires with None when the change log no longer
        reaches back to ``revision`` (a full snapshot is needed instead).
        """

    def replaceAll(snapshot):
        """Replace every record and the revision with ``snapshot``'s.

        The change log is emptied: it restarts at the snapshot's revision.
        """

    def addEvent(event):
        """Append a ``model.Event``; fire with the event carrying its id."""

    def events(limit):
        """Fire with up to ``limit`` events, newest first."""

    def getLocal(name):
        """Fire with a local (never synced) value, or None when unset."""

    def setLocal(name, value):
        """Store a local value (any JSON value); None removes it. A name that ends in
        ``:`` names a family: None removes every value whose name starts with it."""

    def getLocals(prefix):
        """Fire with the local values whose names start with ``prefix``, by name."""

    def addUsage(points, denials, now, held=()):
        """Write a minute's ``usage.Point`` rows and ``usage.Denial`` refusals, and add the
        ``usage.SeatTime``s to their days; derive the hour and day rows; drop what is older
        than kept (``store.usagejobs``)."""

    def usageSince(since):
        """Fire with what a failover syncs of the usage history from ``since``: ``(points,
        denials, held, until)``, ``until`` where the next sync starts."""

    def applyUsage(points, denials, held, until, now):
        """Take the primary's usage rows (a failover's sync), and note ``until`` as the local
        value ``usage_synced`` in the same write."""

    def topHolders(product, since, until, by, limit):
        """Fire with the machines or users (``by``) with the most seat hours of ``product``
        in the days of the time: ``[(name, hours)]``, most first."""

    def usage(step, since, until, product):
        """Fire with the ``usage.Point`` rows of ``step`` in the time, of one product or all."""

    def denials(since, until, limit):
        """Fire with up to ``limit`` ``usage.Denial`` refusals in the time, newest first."""

    def broken():
        """Why the store stopped on its own and refuses every call (a message), or None.

        None while it works, and after a ``close`` asked for: only a store that
        can no longer write, unasked, is broken.
        """


class ILedger(Interface):
    """The one owner of the pool's state: every change to it goes through here."""

    pool = Attribute("the records as they are now (a ``pool.Pool``), for reading")
    committedRevision = Attribute("the newest revision the store has made durable")
    revision = Attribute("the pool's revision: the last change applied")

    def load(snapshot):
        """Hold ``snapshot`` as read from the store."""

    def start(snapshot):
        """Hold ``snapshot`` as read when the server starts: running leases live until
        the latest end their clients may have been told."""

    def commit(changes, audited=()):
        """Apply ``changes`` now and write them; fire once they are durable.

        Keyword arguments: ``patient`` (the write may wait to share a
        transaction), ``result`` (what to fire with), ``revision`` (a sync's,
        instead of the next). A refused write puts the pool back and fails
        with ``internal-error``.
        """

    def renew(leases, now):
        """Renew leases; return them and the Deferred of their write, or None."""

    def applySync(groups):
        """Apply a sync's ``(revision, changes)`` groups through ``commit``."""

    def replace(snapshot):
        """Replace everything with ``snapshot``: the store, then the pool."""

    def restore(snapshot):
        """Go back to ``snapshot`` at once; fire once the store holds it too."""


class IRole(Interface):
    """What the licensing protocol and the web ask of the server's role.

    Operations on behalf of clients return Deferreds that fire with the
    response arguments, or fail with ``wire.ProtocolError``.
    """

    roleName = Attribute("'primary' or 'failover'")
    state = Attribute("'active' or 'standby'")
    serverName = Attribute("this server's display name")

    def status():
        """The STATUS arguments of this server, as a dict."""

    def hello(session, args):
        """Register the session's machine and product (HELLO)."""

    def checkout(session, args):
        """Take a seat (CHECKOUT)."""

    def heartbeat(session, args):
        """Renew one lease, or every lease of the session's machine."""

    def release(session, args):
        """Free a lease (RELEASE)."""

    def borrow(session, args):
        """Take a seat for days (BORROW)."""

    def serveCheckout(session, args):
        """CHECKOUT for the licensing port: the answer's arguments, or a Deferred
        of them once the grant is durable; raises ``wire.ProtocolError`` to refuse."""

    def serveHeartbeat(session, args):
        """HEARTBEAT for the licensing port: the answer's arguments, or a Deferred
        of them when the renewal must be written; raises ``wire.ProtocolError``."""

    def serveRelease(session, args):
        """RELEASE for the licensing port: a Deferred of the answer's arguments
        once the release is durable; raises ``wire.ProtocolError`` to refuse."""
