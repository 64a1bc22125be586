"""Shared fixtures: real servers (tests/fixtures/services.py), a Ceph RGW (tests/fixtures/ceph.py),
the local chain (tests/fixtures/chain.py) and the scenario recorder of `make chaos`
(tests/fixtures/chaos.py)."""

from tests.fixtures.ceph import *  # noqa: F403
from tests.fixtures.chain import *  # noqa: F403
from tests.fixtures.chaos import _chaos_current_test  # noqa: F401
from tests.fixtures.services import *  # noqa: F403
