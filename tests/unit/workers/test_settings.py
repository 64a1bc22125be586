"""Settings: the seed's variables and defaults; a bad value names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.logs import redact
from workers.settings import ConfigError, Settings, write_quorum


def test_defaults_match_the_seed() -> None:
    s = Settings.from_env({})
    assert (s.port, s.num_nodes, s.n_prime, s.tau, s.replication_factor, s.chunk_size) == (
        5000,
        5,
        10000,
        10,
        3,
        262144,
    )
    assert s.debug is False and s.api_keys == ()
    assert [p.name for p in s.node_dirs()] == [
        "node_000",
        "node_001",
        "node_002",
        "node_003",
        "node_004",
    ]


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"NUM_NODES": "0"}, "NUM_NODES"),
        ({"REPLICATION_FACTOR": "6"}, "REPLICATION_FACTOR"),
        ({"TAU": "3", "REPLICATION_FACTOR": "3"}, "TAU"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"HEALTH_SLO": "1.5"}, "HEALTH_SLO"),
        ({"CHUNK_SIZE": "10"}, "CHUNK_SIZE"),
        ({"API_KEYS_FILE": "/nonexistent/keys"}, "API_KEYS_FILE"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_api_keys_from_file_and_never_in_repr(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("alpha\nbeta, gamma\n")
    s = Settings.from_env({"API_KEYS_FILE": str(f)})
    assert s.api_keys == ("alpha", "beta", "gamma")
    assert "alpha" not in repr(s)
    assert "alpha" not in str(s.public_config())


@pytest.mark.parametrize(("r", "w"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_write_quorum_is_a_majority(r: int, w: int) -> None:
    assert write_quorum(r) == w


def test_logs_redact_secrets() -> None:
    key = "0x" + "ab" * 32
    line = redact(f"key={key} Authorization: Bearer s3cret api_key=xyz")
    assert key not in line and "s3cret" not in line and "xyz" not in line
