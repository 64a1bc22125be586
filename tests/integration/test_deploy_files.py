"""The deployment files are valid: compose file, nginx config, Dockerfile commands, .ci/run."""

from __future__ import annotations

import gc
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.services import NGINX_INCLUDES, ROOT, free_port, nginx_binary, nginx_conf

pytestmark = pytest.mark.integration


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed (make deps installs it)"
    )


def compose_config(*profiles: str) -> dict[str, Any]:
    """`compose [--profile p ...] config`, parsed; fails the test if it does not validate."""
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run(
        [*compose_command(), *args, "config"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("profiles", [(), ("dev",), ("production",), ("dev", "production")])
def test_compose_file_validates_with_each_profile(profiles: tuple[str, ...]) -> None:
    services = compose_config(*profiles)["services"]
    assert {"api", "private-api", "worker", "beat", "redis", "chain", "nginx"} <= set(services)
    # compose lists every service; the profile decides which ones `up` starts
    assert services["chain"]["profiles"] == ["dev"]
    assert services["nginx"]["profiles"] == ["production"]
    for name in ("api", "private-api", "worker", "beat", "redis"):
        assert not services[name].get("profiles"), name


def test_compose_production_shape() -> None:
    config = compose_config("production")
    services = config["services"]
    # one image for every role, chosen by the entrypoint's named command
    for name in ("api", "private-api", "worker", "beat", "chain"):
        assert services[name]["image"] == "occ-gateway:latest", name
    assert [services[n]["command"] for n in ("api", "private-api", "worker", "beat", "chain")] == [
        ["api"],
        ["private-api"],
        ["worker"],
        ["beat"],
        ["chain"],
    ]
    # scalable workers: no fixed name, no host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    # the private API is never published on the host
    assert "ports" not in services["private-api"]
    redis_cmd = services["redis"]["command"]
    assert "appendonly" in " ".join(redis_cmd) and "noeviction" in redis_cmd
    assert any(
        str(v).startswith("redis_data:") or "redis_data" in str(v)
        for v in services["redis"]["volumes"]
    )
    # node storage on named volumes, one per node
    assert {f"node_{i:03d}" for i in range(5)} <= set(config["volumes"])
    # secrets come from files, mounted at /run/secrets/<name>, never inline values
    assert set(config["secrets"]) == {"payment_config", "gateway_key", "api_keys"}
    assert all(set(s) == {"file"} for s in config["secrets"].values())
    env = services["api"]["environment"]
    assert env["PAYMENT_CONFIG"] == "/run/secrets/payment_config"
    assert env["GATEWAY_KEY_FILE"] == "/run/secrets/gateway_key"
    assert env["API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert "API_KEYS" not in env and "GATEWAY_KEY" not in env
    # the same environment block for every role
    for name in ("private-api", "worker", "beat"):
        assert services[name]["environment"] == env, name
    nginx = services["nginx"]
    assert {int(p["target"]) for p in nginx["ports"]} == {80, 443}
    assert "5001" not in str(nginx)


def test_dockerfile_runs_every_role_as_non_root_through_the_entrypoint() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "slim" in dockerfile.split("FROM python:", 1)[1].splitlines()[0]
    assert "USER occ" in dockerfile and "useradd" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "healthcheck" in dockerfile
    assert 'ENTRYPOINT ["/app/scripts/entrypoint.sh"]' in dockerfile
    assert 'CMD ["api"]' in dockerfile
    assert "-r requirements.txt" in dockerfile
    requirements = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements and all("==" in line for line in requirements)
    entrypoint = ROOT / "scripts" / "entrypoint.sh"
    assert subprocess.run(["sh", "-n", str(entrypoint)]).returncode == 0
    text = entrypoint.read_text()
    for command in ("api", "private-api", "worker", "beat", "chain", "rebuild-index"):
        assert f"\n  {command})\n" in text, command
    assert "scripts/gunicorn.conf.py" in text and "api.wsgi:app" in text


def test_entrypoint_healthcheck_probes_health(tmp_path: Path) -> None:
    """`entrypoint.sh healthcheck PORT` fails when nothing answers /health on that port."""
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "entrypoint.sh"), "healthcheck", str(free_port())],
        cwd=ROOT,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        capture_output=True,
    )
    assert result.returncode != 0


def test_roles_share_one_metrics_directory_and_each_clears_only_its_own_files(
    tmp_path: Path,
) -> None:
    """The image's PROMETHEUS_MULTIPROC_DIR is on /data, the occ_data volume every gateway role
    mounts; a starting role removes the metric files of its own host (<type>_<host>-<pid>.db)
    and leaves those of the other containers."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PROMETHEUS_MULTIPROC_DIR=/data/metrics" in dockerfile
    services = compose_config("production")["services"]
    for name in ("api", "private-api", "worker", "beat"):
        mounts = [  # short (`occ_data:/data`) or long syntax, as the compose version prints
            v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}"
            for v in services[name]["volumes"]
        ]
        assert "occ_data:/data" in [m.removesuffix(":rw") for m in mounts], (name, mounts)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    host = socket.gethostname()
    mine, others = metrics / f"counter_{host}-7.db", metrics / "counter_otherhost-7.db"
    for path in (mine, others):
        path.write_bytes(b"x")
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "entrypoint.sh"), "beat", "--help"],
        cwd=ROOT,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "BEAT_DIR": str(tmp_path / "beat"),
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr
    assert not mine.exists() and others.exists()


def test_gunicorn_config_reads_the_environment() -> None:
    code = (
        "import json, runpy; c = runpy.run_path('scripts/gunicorn.conf.py'); "
        "print(json.dumps({k: c[k] for k in ('workers', 'threads', 'timeout', "
        "'graceful_timeout', 'max_requests', 'max_requests_jitter', 'limit_request_line', "
        "'limit_request_fields', 'limit_request_field_size', 'forwarded_allow_ips', "
        "'access_log_format')}))"
    )
    env = {
        **os.environ,
        "GUNICORN_WORKERS": "7",
        "GUNICORN_THREADS": "3",
        "FORWARDED_ALLOW_IPS": "10.0.0.2",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    conf = json.loads(out.stdout)
    assert conf["workers"] == 7 and conf["threads"] == 3
    assert conf["forwarded_allow_ips"] == "10.0.0.2"
    assert conf["timeout"] > conf["graceful_timeout"] > 0
    assert conf["max_requests"] > conf["max_requests_jitter"] > 0
    assert conf["limit_request_line"] and conf["limit_request_fields"]
    assert conf["limit_request_field_size"]
    fields = json.loads(conf["access_log_format"])  # one JSON object per line
    assert {"status", "path", "forwarded_for", "request_id"} <= set(fields)


def test_compose_worker_hosts_on_s3_nodes_share_no_disk() -> None:
    """The s3-hosts profile: extra worker hosts that reach their nodes through a nodes file and
    share nothing with the main host but Redis (issue 11)."""
    result = subprocess.run(
        [*compose_command(), "--profile", "s3-hosts", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    host = result.stdout[result.stdout.index("  worker-host:") :]
    host = host[: host.index("\nvolumes:")]  # services are listed in name order
    assert "NODES_FILE: /etc/occ/nodes.json" in host and "occ_data" not in host


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, free_port(), free_port()))
    result = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # the private registration port is never proxied
    for name in ("nginx.conf", *NGINX_INCLUDES):
        assert "5001" not in (ROOT / name).read_text(), name


def test_nginx_tls_server_passes_nginx_t_with_a_mounted_certificate(tmp_path: Path) -> None:
    """nginx-tls.conf, as compose enables it (copied into tls.d/), with a self-signed cert."""
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(certs / "privkey.pem"),
            "-out",
            str(certs / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, free_port(), free_port()))
    (tmp_path / "tls.d").mkdir()
    tls = (
        (ROOT / "nginx-tls.conf")
        .read_text()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{free_port()} ssl;")
        .replace("/etc/nginx/certs/", f"{certs}/")
    )
    (tmp_path / "tls.d" / "occ.conf").write_text(tls)
    result = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and readme.splitlines()[4].startswith("make test")
    assert readme.splitlines()[3].startswith("make run")


def test_invalid_setting_stops_start_up_with_a_clear_message() -> None:
    env = {**os.environ, "NUM_NODES": "0", "PYTHONPATH": str(ROOT)}
    bin_dir = Path(sys.executable).parent
    gunicorn = subprocess.run(
        [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{free_port()}", "api.wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gunicorn.returncode != 0
    assert "configuration error: NUM_NODES must be between 1 and 1000, got 0" in gunicorn.stderr
    env["NUM_NODES"], env["REPLICATION_FACTOR"] = "3", "5"
    worker = subprocess.run(
        [str(bin_dir / "celery"), "-A", "workers.celery_app", "worker", "--loglevel", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "configuration error: REPLICATION_FACTOR must be between 1 and 3, got 5" in worker.stderr


def test_gunicorn_access_log_atoms_are_json_escaped_when_read() -> None:
    conf = runpy.run_path(str(ROOT / "scripts" / "gunicorn.conf.py"))
    assert conf["preload_app"] is True  # a recycled worker is a fork, not a fresh import
    before = gc.get_freeze_count()
    conf["pre_fork"](None, None)  # the preloaded objects leave the collector's generations
    try:
        assert gc.get_freeze_count() > before and gc.get_count()[2] == 0
    finally:
        gc.unfreeze()
    atoms = conf["JsonAtoms"]({"U": '/a"b\\c\n', "a": "x\x01y", "{x-request-id}i": "r1", "s": 200})
    line = conf["access_log_format"] % atoms
    entry = json.loads(line)  # still one valid JSON object
    assert entry["path"] == '/a"b\\c\n' and entry["user_agent"] == "x\x01y"
    assert entry["status"] == "200" and entry["forwarded_for"] == "-"  # missing atom
    assert entry["request_id"] == "r1"
