"""Tests for licenseserver.addresses: HOST[:PORT] as command lines and answers write it."""

from twisted.trial import unittest

from licenseserver.addresses import (
    display_address,
    format_host_port,
    parse_host_port,
    server_port_interface,
    split_endpoint,
)


class ParseTests(unittest.TestCase):
    def test_hostPort(self):
        """HOST[:PORT] and [v6]:PORT parse; the port defaults to 35355."""
        self.assertEqual(parse_host_port("ls1"), ("ls1", 35355))
        self.assertEqual(parse_host_port("ls1:4000"), ("ls1", 4000))
        self.assertEqual(parse_host_port("[::1]:5"), ("::1", 5))
        for bad in ("", "ls1:0", "ls1:65536", "a b", "tcp:host=ls1:port=1"):
            self.assertIsNone(parse_host_port(bad), bad)

    def test_format(self):
        """An IPv6 address goes in brackets."""
        self.assertEqual(format_host_port("ls1", 1), "ls1:1")
        self.assertEqual(format_host_port("::1", 2), "[::1]:2")


class DisplayAddressTests(unittest.TestCase):
    def test_hostPortForms(self):
        """A primary is shown as HOST:PORT, with the default port filled in."""
        self.assertEqual(display_address("ls1"), "ls1:35355")
        self.assertEqual(display_address("ls1:4000"), "ls1:4000")
        self.assertEqual(display_address("[::1]"), "[::1]:35355")

    def test_endpointStrings(self):
        """A client endpoint string is shown as the host and port it connects to."""
        self.assertEqual(display_address("tcp:host=ls1:port=4000"), "ls1:4000")
        self.assertEqual(display_address("tcp:ls1:4000"), "ls1:4000")
        self.assertEqual(display_address("tcp:host=ls1"), "ls1:35355")
        self.assertEqual(
            display_address("ssl:host=ls1.example.com:port=35356:caCertsDir=/etc/ssl/certs"),
            "ls1.example.com:35356",
        )
        self.assertEqual(display_address("tls:host=ls1:port=7"), "ls1:7")
        self.assertEqual(display_address("tcp:host=\\:\\:1:port=9"), "[::1]:9")

    def test_otherTextAsGiven(self):
        """Text that names no host and port is shown as it was given."""
        for text in ("unix:/run/ls.sock", "tcp:port=1", "tcp:host=ls1:port=99999", "a b"):
            self.assertEqual(display_address(text), text)


class EndpointStringTests(unittest.TestCase):
    def test_split(self):
        """Endpoint strings split as Twisted splits them: escapes, keywords, positions."""
        self.assertEqual(
            split_endpoint("tcp:host=\\:\\:1:port=9"), ("tcp", [], {"host": "::1", "port": "9"})
        )
        self.assertEqual(split_endpoint("tcp:35355"), ("tcp", ["35355"], {}))
        self.assertRaises(ValueError, split_endpoint, "tcp:a\\")

    def test_serverPortInterface(self):
        """The port and interface of tcp: and ssl: server strings; None for others."""
        cases = {
            "tcp:35355": (35355, ""),
            "tcp:port=8088:interface=10.0.0.5": (8088, "10.0.0.5"),
            "tcp:0:interface=\\:\\:1": (0, "::1"),
            "ssl:443:privateKey=k.pem:interface=fe80\\:\\:1": (443, "fe80::1"),
            "unix:/tmp/x": None,
            "tcp:interface=x": None,
        }
        for text, expected in cases.items():
            self.assertEqual(server_port_interface(text), expected, text)
