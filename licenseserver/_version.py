"""The server's version and edition: the only place either is written."""

__version__ = "1.0.0"
EDITION = "standard"
