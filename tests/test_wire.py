"""Tests for licenseserver.protocols.wire: the protocol's syntax."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver.protocols import wire
from licenseserver.protocols.wire import ProtocolError, Request, Response

keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=40
)
argument_dicts = st.dictionaries(keys, values, max_size=6)
verbs = st.sampled_from(sorted(wire.VERBS))


class ParseRequestTests(unittest.TestCase):
    def assertRefused(self, line: bytes, reason: str) -> None:
        with self.assertRaises(ProtocolError) as caught:
            wire.parse_request(line)
        self.assertEqual(caught.exception.reason, reason)
        self.assertEqual(caught.exception.code, wire.REASONS[reason])

    def test_bareAndQuoted(self):
        """Bare values may hold '='; quoted values hold spaces and JSON escapes."""
        request = wire.parse_request(b'HELLO product=XMLSpy machine=a=b host="ws 17\\t\\u00e9"')
        self.assertEqual(
            request,
            Request("HELLO", {"product": "XMLSpy", "machine": "a=b", "host": "ws 17\té"}),
        )

    def test_crDropped(self):
        """A CR right before the LF is not part of the line."""
        self.assertEqual(wire.parse_request(b"PING\r"), Request("PING"))

    def test_emptyLineIgnored(self):
        """An empty line is no request."""
        self.assertIsNone(wire.parse_request(b""))
        self.assertIsNone(wire.parse_request(b"\r"))

    def test_unknownVerb(self):
        """A word that is not a verb is an unknown command, in any case."""
        self.assertRefused(b"FROB x=1", "unknown-command")
        self.assertRefused(b"hello", "unknown-command")

    def test_notAWord(self):
        """A line that does not start with a word is a bad request."""
        self.assertRefused(b"\x00\x01\x02", "bad-request")
        self.assertRefused(b"=x", "bad-request")
        self.assertRefused(b" PING", "bad-request")

    def test_invalidUTF8(self):
        """Invalid UTF-8 is a bad request."""
        self.assertRefused(b"HELLO product=\xff\xfe", "bad-request")

    def test_repeatedKey(self):
        """A key given twice is a bad request."""
        self.assertRefused(b"HELLO product=a product=b", "bad-request")

    def test_badKey(self):
        """Keys are lower-case names."""
        self.assertRefused(b"HELLO Product=a", "bad-request")
        self.assertRefused(b"HELLO 1x=a", "bad-request")

    def test_emptyBareValue(self):
        """An empty value must be quoted."""
        self.assertRefused(b"HELLO product=", "bad-request")
        self.assertEqual(wire.parse_request(b'HELLO user=""').args, {"user": ""})

    def test_wordWithoutValue(self):
        """An argument without '=' is a bad request."""
        self.assertRefused(b"HELLO product", "bad-request")

    def test_badQuotes(self):
        """Unclosed quotes, bad escapes and text right after a quote are refused."""
        self.assertRefused(b'HELLO host="ws', "bad-request")
        self.assertRefused(b'HELLO host="\\x"', "bad-request")
        self.assertRefused(b'HELLO host="a"b', "bad-request")
        self.assertRefused(b'HELLO host="\\ud800"', "bad-request")
        self.assertRefused(b'HELLO host=a"b', "bad-request")

    def test_controlCharacterInBareValue(self):
        """A bare value holds printable characters only."""
        self.assertRefused(b"HELLO host=a\tb", "bad-request")

    def test_unknownKeysKept(self):
        """Unknown keys parse (the role ignores them: forward compatibility)."""
        self.assertEqual(wire.parse_request(b"PING future=1").args, {"future": "1"})

    def test_peerVerbsRefusedWhereNotServed(self):
        """With only the client verbs allowed, a peer verb is an unknown command."""
        with self.assertRaises(ProtocolError) as caught:
            wire.parse_request(b"PEER name=x", wire.CLIENT_VERBS)
        self.assertEqual(caught.exception.reason, "unknown-command")

    @given(st.binary(max_size=200))
    @settings(max_examples=500)
    def test_noiseNeverCrashes(self, data):
        """Any bytes parse to a request, to nothing, or to a ProtocolError."""
        line = data.replace(b"\n", b"")
        try:
            result = wire.parse_request(line)
        except ProtocolError as e:
            self.assertIn(e.reason, ("bad-request", "unknown-command"))
        else:
            self.assertTrue(result is None or result.verb in wire.VERBS)


class IntegerTests(unittest.TestCase):
    def test_parseInteger(self):
        """A whole number is 1 to MAX_DIGITS ASCII digits; anything else is none."""
        self.assertEqual(wire.parse_integer("0"), 0)
        self.assertEqual(wire.parse_integer("9" * wire.MAX_DIGITS), wire.MAX_INTEGER)
        self.assertEqual(wire.parse_integer("0" * (wire.MAX_DIGITS - 1) + "7"), 7)
        for text in ("", "-1", "+1", "1.0", " 1", "\u00b2", "\u0663", "1" * 19, "9" * 5000):
            self.assertIsNone(wire.parse_integer(text), text[:20])

    def test_integerArg(self):
        """An integer argument is its default when absent, else a number within its range."""
        self.assertEqual(wire.integer_arg({}, "cores", 3, 1, 8), 3)
        self.assertEqual(wire.integer_arg({"cores": "8"}, "cores", 3, 1, 8), 8)
        for text in ("0", "9", "x", "9" * 5000):
            with self.assertRaises(ProtocolError) as caught:
                wire.integer_arg({"cores": text}, "cores", 3, 1, 8)
            self.assertEqual(caught.exception.reason, "bad-request")
            self.assertEqual(caught.exception.message, "cores must be an integer from 1 to 8")

    @given(st.text(max_size=30))
    def test_parseIntegerAgreesWithInt(self, text):
        """parse_integer is int() on ASCII digits of at most MAX_DIGITS, None otherwise."""
        good = text.isascii() and text.isdigit() and len(text) <= wire.MAX_DIGITS
        self.assertEqual(wire.parse_integer(text), int(text) if good else None)


class RoundTripTests(unittest.TestCase):
    @given(verbs, argument_dicts)
    @settings(max_examples=300)
    def test_requestRoundTrip(self, verb, args):
        """A formatted request parses back to the same verb and arguments."""
        line = wire.format_request(verb, args)
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(wire.parse_request(line[:-1]), Request(verb, args))

    @given(argument_dicts)
    def test_okRoundTrip(self, args):
        """A formatted OK parses back to the same arguments."""
        line = wire.format_ok(args)
        self.assertEqual(wire.parse_response(line[:-1]), Response(True, args))

    @given(st.sampled_from(sorted(wire.REASONS)), argument_dicts, st.none() | values)
    def test_errorRoundTrip(self, reason, args, message):
        """A formatted ERR parses back to its code, reason, arguments and message."""
        args.pop("message", None)
        line = wire.format_error(wire.REASONS[reason], reason, args, message)
        expected = dict(args)
        if message is not None:
            expected["message"] = message
        self.assertEqual(
            wire.parse_response(line[:-1]),
            Response(False, expected, wire.REASONS[reason], reason),
        )

    def test_errorLine(self):
        """A ProtocolError becomes its ERR line with the message last."""
        error = ProtocolError("standby", "go to the primary", primary="ls1:35355")
        self.assertEqual(
            error.toLine(), b'ERR 503 standby primary=ls1:35355 message="go to the primary"\n'
        )

    def test_formatBooleans(self):
        """Booleans go on the wire as true and false."""
        self.assertEqual(wire.format_ok({"a": True, "b": False}), b"OK a=true b=false\n")

    def test_badResponse(self):
        """A response that is neither OK nor ERR with code and reason is refused."""
        for line in (b"HELLO", b"ERR", b"ERR 4x1 bad", b"ERR 400 Bad"):
            self.assertRaises(ProtocolError, wire.parse_response, line)


class QuickPathTests(unittest.TestCase):
    @given(st.text(st.characters(blacklist_characters='"\n', blacklist_categories=("Cs",))))
    @settings(max_examples=500)
    def test_quickPathAgreesWithScan(self, text):
        """Lines without quotes split the same on the quick path as in the full scan."""

        def outcome(tokens):
            try:
                return tokens(text)
            except ProtocolError as e:
                return e.reason

        self.assertEqual(outcome(wire._tokens), outcome(wire._scan_tokens))

    def test_quickPathCases(self):
        """Extra spaces, '=' in values and missing values split as in the full scan."""
        for text in ("a=1  b==2 ", "=x", "a", "a=", "a=x\ty", " a=b c=d"):
            try:
                expected = wire._scan_tokens(text)
            except ProtocolError as e:
                with self.assertRaises(ProtocolError) as caught:
                    wire._tokens(text)
                self.assertEqual(caught.exception.reason, e.reason)
            else:
                self.assertEqual(wire._tokens(text), expected)

    @given(
        st.sampled_from(["CHECKOUT", "RELEASE", "HELLO", "NOPE", "bad", ""]),
        st.lists(
            st.sampled_from(["lease", "product", "x_1", "Bad", "lease"])
            | st.text(st.characters(blacklist_characters='"\n', blacklist_categories=("Cs",))),
            max_size=5,
        ),
        st.lists(st.text(st.characters(blacklist_categories=("Cs",))), max_size=5),
    )
    @settings(max_examples=500)
    def test_fastParseAgreesWithScan(self, verb, keys, values):
        """parse_request's path for bare words gives what the full scan gives, or its error."""
        words = [
            f"{k}={v}" if i % 2 == 0 else k
            for i, (k, v) in enumerate(zip(keys, values, strict=False))
        ]
        words += [f"{k}=v" for k in keys[len(values) :]]
        text = " ".join([verb, *words])
        line = text.encode("utf-8", "surrogatepass")

        def scanned():
            decoded = wire.decode_line(line)
            head, _, rest = decoded.partition(" ")
            if decoded == "":
                return None
            if head not in wire.VERBS:
                return "refused"
            return Request(head, wire._arguments(wire._scan_tokens(rest)))

        def outcome(parse):
            try:
                return parse()
            except ProtocolError as e:
                return "refused" if e.reason == "unknown-command" else e.reason

        expected = outcome(scanned)
        got = outcome(lambda: wire.parse_request(line))
        if expected == "refused":
            self.assertIn(got, ("refused", "bad-request"))
        else:
            self.assertEqual(got, expected)

    def test_fastFormatAgreesWithFull(self):
        """An answer's integers and known names format as format_value would."""
        args = {"lease": "l-1", "expires": 1795000120, "ttl": 120, "x_y": -3, "flag": True}
        expected = "OK" + "".join(f" {k}={wire.format_value(v)}" for k, v in args.items())
        self.assertEqual(wire.format_ok(args), (expected + "\n").encode())
