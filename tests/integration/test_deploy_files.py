"""The deployment files are valid: compose file, nginx config, Dockerfile commands, .ci/run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.services import ROOT, free_port, nginx_binary

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


def test_compose_file_validates() -> None:
    result = subprocess.run(
        [*compose_command(), "config", "-q"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    config = subprocess.run(
        [*compose_command(), "config", "--services"], cwd=ROOT, capture_output=True, text=True
    )
    services = set(config.stdout.split())
    assert {"redis", "chain", "occ-storage", "private", "worker", "beat"} <= services


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
    text = (ROOT / "nginx.conf").read_text()
    text = (
        text.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
        .replace("pid /run/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
        .replace("/var/log/nginx/", f"{tmp_path}/")
        .replace("/var/lib/nginx/", f"{tmp_path}/")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # the private registration port is never proxied
    assert "5001" not in (ROOT / "nginx.conf").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and readme.splitlines()[4].startswith("make test")
    assert readme.splitlines()[3].startswith("make run")


def test_invalid_setting_stops_start_up_with_a_clear_message() -> None:
    import os
    import sys

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
