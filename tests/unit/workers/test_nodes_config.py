"""Node configuration: NODES_FILE / NODES_JSON parsing, one-line errors naming the node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from occ_storage.nodes import LocalDirNode
from occ_storage.s3node import S3Node
from workers.nodes_config import build_nodes
from workers.settings import ConfigError, Settings


def s3(node_id: str, **kw: object) -> dict[str, object]:
    return {
        "id": node_id,
        "kind": "s3",
        "endpoint": "http://127.0.0.1:7480",
        "bucket": "occ-a",
        **kw,
    }


def env_for(nodes: list[dict[str, object]], **extra: str) -> dict[str, str]:
    return {"NODES_JSON": json.dumps({"nodes": nodes}), "STORAGE_DIR": "/srv/occ", **extra}


KEYS = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}


def test_three_local_and_two_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cred = tmp_path / "rgw.env"
    cred.write_text("AWS_ACCESS_KEY_ID=AK2\nAWS_SECRET_ACCESS_KEY=SK2\n")
    nodes = [{"id": f"d{i}", "kind": "local"} for i in range(3)]
    nodes += [
        s3("rgw-1", weight=2),
        s3("rgw-2", endpoint="https://s3.example", credentials_file=str(cred)),
    ]
    settings = Settings.from_env(env_for(nodes, REPLICATION_FACTOR="3", **KEYS))
    assert settings.num_nodes == 5
    assert settings.node_specs[0].path == Path("/srv/occ/d0")
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    built = build_nodes(settings.node_specs, settings.node_dirs())
    assert [type(n) for n in built] == [LocalDirNode] * 3 + [S3Node] * 2
    assert built[3].weight == 2.0
    public = json.dumps(settings.public_config())
    assert "SK" not in public and "AK" not in public and "rgw-2" in public
    assert "SK2" not in repr(settings) and "SK2" not in repr(built)


def test_num_nodes_stays_the_shortcut() -> None:
    settings = Settings.from_env({"NUM_NODES": "4", "REPLICATION_FACTOR": "2"})
    assert settings.node_specs == () and len(settings.node_dirs()) == 4


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([s3("rgw-1", bucket="Bad_Bucket")], "node 'rgw-1': bucket"),
        ([s3("rgw-1", endpoint="ftp://x")], "node 'rgw-1': endpoint"),
        ([s3("rgw-1", weight=-1)], "node 'rgw-1': weight"),
        ([s3("rgw-1", colour="red")], "node 'rgw-1': unknown keys"),
        ([s3("rgw-1"), s3("rgw-1")], "node 'rgw-1': id used twice"),
        ([{"id": "x", "kind": "ftp"}], "node 'x': kind"),
        ([{"kind": "local"}], "node #0: id"),
        ([s3("rgw-1", credentials_file="/nonexistent")], "node 'rgw-1': credentials_file"),
    ],
)
def test_invalid_config_is_one_line_naming_the_node(
    nodes: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env_for(nodes, **KEYS))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_credentials_stop_start_up() -> None:
    with pytest.raises(ConfigError, match="node 'rgw-1': no S3 credentials"):
        Settings.from_env(env_for([s3("rgw-1")]))


def test_nodes_file(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [{"id": "a"}, {"id": "b", "path": "/data/b"}]}))
    settings = Settings.from_env({"NODES_FILE": str(path), "REPLICATION_FACTOR": "2"})
    assert [s.path for s in settings.node_specs] == [Path("data/occ_storage/a"), Path("/data/b")]
    with pytest.raises(ConfigError, match="NODES_FILE"):
        Settings.from_env({"NODES_FILE": str(tmp_path / "none.json")})
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Settings.from_env({"NODES_FILE": str(path)})


@pytest.mark.parametrize(
    ("value", "parsed"), [(None, None), ("auto", None), (True, True), (False, False)]
)
def test_conditional_put_is_auto_unless_set(
    value: object, parsed: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    entry = s3("rgw-1") if value is None else s3("rgw-1", conditional_put=value)
    (node,) = build_nodes(Settings.from_env({**env_for([entry]), **KEYS}).node_specs, [])
    assert isinstance(node, S3Node) and node.conditional_put is parsed  # nothing asked yet


def test_conditional_put_rejects_other_values() -> None:
    with pytest.raises(ConfigError, match='conditional_put must be true, false or "auto"'):
        Settings.from_env({**env_for([s3("rgw-1", conditional_put="yes")]), **KEYS})
