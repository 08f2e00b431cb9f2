"""Tests for licenseserver.versions: product version ordering."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver import versions
from licenseserver.versions import Version, VersionError


class VersionTests(unittest.TestCase):
    def test_yearReleases(self):
        """Years order by release, then service pack; a bare year is release 1."""
        order = ["2015", "2015r3", "2015r3sp1", "2016r2", "2024r2", "2024r2sp1", "2025r2"]
        self.assertEqual(sorted(order, key=Version), order)
        self.assertEqual(Version("2016"), Version("2016r1"))

    def test_dotted(self):
        """Dotted versions order numerically; missing parts are zeros."""
        self.assertLess(Version("1.5"), Version("1.10"))
        self.assertLess(Version("1.5"), Version("9.0.1"))
        self.assertEqual(Version("1.5"), Version("1.5.0"))

    def test_str(self):
        """A version prints as the text it came from."""
        self.assertEqual(str(Version("2024R2sp1")), "2024R2sp1")

    def test_invalid(self):
        """Text that is neither scheme is refused."""
        for text in (
            "",
            "v1",
            "1..2",
            "2015r",
            "2015rx",
            "1.5-beta",
            "2015 r3",
            "1.5\n",
            "\u0662015",
        ):
            self.assertRaises(VersionError, Version, text)
            self.assertFalse(versions.is_valid(text))

    def test_minimums(self):
        """A product meets the minimum named for it, else the '*' minimum."""
        table = {"*": "2015r3", "MobileTogetherServer": "1.5"}
        self.assertTrue(versions.meets_minimum("XMLSpy", "2015r3", table))
        self.assertFalse(versions.meets_minimum("XMLSpy", "2015", table))
        self.assertTrue(versions.meets_minimum("MobileTogetherServer", "1.5", table))
        self.assertFalse(versions.meets_minimum("MobileTogetherServer", "1.4", table))
        self.assertFalse(versions.meets_minimum("XMLSpy", "junk", table))
        self.assertTrue(versions.meets_minimum("XMLSpy", "1.0", {}))

    @given(
        st.tuples(st.integers(1990, 2100), st.integers(1, 9), st.integers(0, 9)),
        st.tuples(st.integers(1990, 2100), st.integers(1, 9), st.integers(0, 9)),
    )
    def test_orderMatchesTuples(self, a, b):
        """Year versions order exactly as (year, release, service pack)."""

        def text(t):
            return f"{t[0]}r{t[1]}" + (f"sp{t[2]}" if t[2] else "")

        self.assertEqual(Version(text(a)) < Version(text(b)), a < b)
