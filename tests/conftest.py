"""Shared fixtures: real servers (tests/fixtures/services.py) and the local chain (tests/fixtures/chain.py)."""

from tests.fixtures.chain import *  # noqa: F403
from tests.fixtures.services import *  # noqa: F403
