"""Test setup: offline before any heavy import; fixtures live in tests/fixtures/ and load as plugins."""

from offline import enforce_offline

enforce_offline()

pytest_plugins = [
    "tests.fixtures.pdfs",
    "tests.fixtures.services",
    "tests.fixtures.markers",
    "tests.fixtures.vision",
    "tests.fixtures.network",
    "tests.fixtures.browser",
]
