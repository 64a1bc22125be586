"""Shared fixtures: real servers (tests/fixtures/services.py), a Ceph RGW (tests/fixtures/ceph.py) and the local chain (tests/fixtures/chain.py)."""

from tests.fixtures.ceph import *  # noqa: F403
from tests.fixtures.chain import *  # noqa: F403
from tests.fixtures.services import *  # noqa: F403
