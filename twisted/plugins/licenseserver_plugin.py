"""The ``twistd licenseserver`` plugin."""

from twisted.application.service import ServiceMaker

licenseserver = ServiceMaker(
    "licenseserver",
    "licenseserver.tap",
    "A network license server with a failover.",
    "licenseserver",
)
