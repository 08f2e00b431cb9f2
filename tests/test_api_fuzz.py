"""Fuzzing the admin API's JSON bodies: no fault, no traceback, no change on a refusal."""

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licenseserver.roles.admin import SETTING_CHECKS
from tests.helpers import hello, licenseFile, run
from tests.test_web_http import PASSWORD, WebTestCase

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
SETTING_NAMES = [
    "borrow_enabled",
    "borrow_max_days",
    "lease_ttl",
    "failover_minimums",
    "partition_policy",
    "failover_share",
    "alert_expiry_days",
    "alert_smtp_host",
    "alert_smtp_port",
    "alert_smtp_tls",
    "alert_smtp_user",
    "alert_smtp_password",
    "alert_from",
    "alert_to",
]
"""Every licensing setting's name (``test_knowsEverySetting`` holds it to the server's)."""
known_keys = st.sampled_from([*SETTING_NAMES, "role", "primary", "licenses", "nope"])
modes = st.fixed_dictionaries(
    {"role": st.sampled_from(["primary", "failover"]) | json_values},
    optional={"primary": st.sampled_from(["ls9", "ls9:1", "a b", ""]) | json_values},
)
bodies = st.one_of(
    modes.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(known_keys, json_values, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=60),
)
targets = st.sampled_from(
    [
        ("PUT", "/api/settings"),
        ("PUT", "/api/clients/c-1/products/XMLSpy/licenses"),
        ("PUT", "/api/clients/c-9/products/XMLSpy/licenses"),
        ("POST", "/api/licenses"),
        ("POST", "/api/licenses/L-none/activate"),
        ("DELETE", "/api/clients/c-404"),
        ("DELETE", "/api/failover"),
        ("PATCH", "/api/settings"),
    ]
)


class AdminAPIFuzz(WebTestCase):
    def setUp(self):
        super().setUp()
        self.successResultOf(run(self.role.addLicenses(licenseFile({"kind": "installed"}))))
        hello(self.role, "m1")
        token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def state(self):
        snapshot = self.role.pool.snapshot()
        records = {k: sorted(map(repr, v)) for k, v in snapshot.records.items()}
        return snapshot.revision, records, self.role.mode()

    def test_knowsEverySetting(self):
        """The fuzzer's setting names are the server's, so every setting's checks are fuzzed."""
        self.assertEqual(sorted(SETTING_NAMES), sorted(SETTING_CHECKS))
        self.assertEqual(sorted(SETTING_CHECKS), sorted(self.role.settingDefaults))

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(targets, bodies)
    def test_jsonBodies(self, target, body):
        """Any body gets a JSON answer below 500; a refusal changes nothing."""
        method, path = target
        before = self.state()
        response = self.request(method, path, body, headers=self.headers)
        self.assertLess(response.status, 500, (target, body, response.body))
        answer = json.loads(response.body)
        self.assertNotIn("Traceback", response.body)
        if response.status >= 400:
            self.assertIsInstance(answer.get("error"), str, response.body)
            self.assertEqual(self.state(), before, (target, body))
        self.assertEqual(self.flushLoggedErrors(), [])
