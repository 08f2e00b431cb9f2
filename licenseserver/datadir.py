"""The data directory: where each file lives, and what first start creates.

``DATA/licenseserver.sqlite3``   the store (SQLite, WAL)
``DATA/admin-password``          the admin password's scrypt hash
``DATA/initial-admin-password``  the random first password, for the admin to read
``DATA/peer-secret``             the pairing secret shared with the failover
``DATA/vendor-keys/*.pub``       trusted vendor public keys
``DATA/<name>.port``             the port a listener got (written on listen)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from licenseserver import passwords


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DataDir:
    """The paths of one data directory, and its first-start set-up."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.database = self.path / "licenseserver.sqlite3"
        self.admin_password = self.path / "admin-password"
        self.initial_password = self.path / "initial-admin-password"
        self.peer_secret = self.path / "peer-secret"
        self.vendor_keys = self.path / "vendor-keys"

    @property
    def upgrade_failed(self) -> Path:
        """``<DIR>.upgrade-failed`` next to the directory: written when an upgrade failed
        and putting the directory back failed too, so that no server starts on what is
        left (or on a new, empty directory in its place) until an admin restored it."""
        real = self.path.resolve()
        return real.with_name(f"{real.name}.upgrade-failed")

    def refuse_if_half_upgraded(self) -> None:
        """Raise ``OSError`` saying how to recover while ``upgrade_failed`` exists."""
        marker = self.upgrade_failed
        if marker.exists():
            raise OSError(
                f"its last upgrade failed and putting it back failed too; restore it "
                f"from the backup as {marker} says, then delete {marker}"
            )

    def lock(self) -> int:
        """Lock the directory for this process; return the descriptor that holds the lock.

        The lock is on the directory itself (no lock file changes its contents) and
        lasts while the descriptor is open, so it ends with the process however it
        ends. Raises ``OSError`` when another process holds it: a server runs here.
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(f"a server is running on {self.path}; stop it first") from None
        return fd

    def port_file(self, name: str) -> Path:
        return self.path / f"{name}.port"

    def prepare(self, peer_secret: Path | None = None) -> str | None:
        """Create what a first start needs; return a new admin password, if one was made.

        Raises ``OSError`` when the directory cannot be made or written.
        """
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.vendor_keys.mkdir(mode=0o755, exist_ok=True)
        secret = peer_secret or self.peer_secret
        if secret == self.peer_secret and not secret.exists():
            write_private(secret, passwords.new_secret() + "\n")
        if self.admin_password.exists():
            return None
        password = passwords.new_password()
        write_private(self.initial_password, password + "\n")
        self.set_admin_password(password)
        return password

    def set_admin_password(self, password: str) -> None:
        """Store the scrypt hash of a new admin password."""
        write_private(self.admin_password, passwords.hash_password(password) + "\n")

    def change_admin_password(self, password: str) -> None:
        """The admin's new password: store its hash and drop the initial password file."""
        self.set_admin_password(password)
        self.initial_password.unlink(missing_ok=True)

    def admin_password_hash(self) -> str:
        return self.admin_password.read_text(encoding="utf-8").strip()

    def read_peer_secret(self, path: Path | None = None) -> str:
        return (path or self.peer_secret).read_text(encoding="utf-8").strip()
