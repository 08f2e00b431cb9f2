"""The primary role: always active, the source of truth for the pool."""

from __future__ import annotations

from licenseserver.roles.base import ServingRole


class PrimaryRole(ServingRole):
    """Serves licenses and takes admin changes at all times."""

    roleName = "primary"
