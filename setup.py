"""Package metadata for licenseserver."""

import re
from pathlib import Path

from setuptools import find_packages, setup

_here = Path(__file__).parent
_version = re.search(
    r'^__version__ = "([^"]+)"',
    (_here / "licenseserver" / "_version.py").read_text(),
    re.M,
).group(1)

setup(
    name="licenseserver",
    version=_version,
    description="A network license server with a failover, built on Twisted.",
    long_description=(_here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["licenseserver", "licenseserver.*"]) + ["twisted.plugins"],
    package_data={"licenseserver.web": ["templates/*.xhtml", "static/*"]},
    install_requires=[
        "Twisted[tls]>=24.7",
        "cryptography>=42",
        "prometheus_client>=0.20",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.100",
            "ruff>=0.6",
            "selenium>=4.20",
            # the wheel test builds without build isolation, offline
            "setuptools>=68",
            "wheel",
        ],
    },
    entry_points={"console_scripts": ["licenseserver = licenseserver.cli:main"]},
)
