"""licenseserver: a network license server with a failover, built on Twisted."""

from licenseserver._version import EDITION, __version__

__all__ = ["EDITION", "__version__"]
