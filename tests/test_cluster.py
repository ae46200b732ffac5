"""A real two-node Ray cluster on localhost runs the laptop chain through `ray job submit`.

`ray stop` ends every Ray process on the machine, so this test runs in its own pytest session
(scripts/test-cpu.sh runs `-m cluster` after the rest of the suite).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _wait_for_nodes(env: dict, address: str, count: int, timeout: float = 120) -> None:
    probe = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = _run([sys.executable, "-c", probe, address], env, 60)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster did not reach {count} live nodes")


@pytest.fixture
def two_node_cluster():
    if ray_running():
        pytest.skip("another Ray instance runs on this machine; run this test in its own session (-m cluster)")
    temp = tempfile.mkdtemp(prefix="zwzc")  # short: Ray's socket paths have a length limit
    gcs, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray 2.60 turns token authentication on for new clusters; every process of this test (both nodes,
    # the probes, `ray job submit`) uses the token from ~/.ray/auth_token, generated here if missing.
    env["RAY_AUTH_MODE"] = "token"
    _run([RAY, "get-auth-token", "--generate"], env, 60)
    head = [RAY, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
            "--num-cpus=3", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            "--disable-usage-stats"]
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
              '--resources={"cpu_worker": 1}']
    try:
        for cmd in (head, worker):
            out = _run(cmd, env, 180)
            assert out.returncode == 0, out.stdout + out.stderr
        _wait_for_nodes(env, f"127.0.0.1:{gcs}", 2)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}"}
    finally:
        _run([RAY, "stop", "--force"], env, 120)
        shutil.rmtree(temp, ignore_errors=True)


def ray_running() -> bool:
    out = subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True, text=True)
    return out.returncode == 0


def test_ray_job_submit_runs_the_chain_on_two_nodes(two_node_cluster, tmp_path):
    env = dict(two_node_cluster["env"])
    out_dir = tmp_path / "r2i"
    runtime_env = {"env_vars": {"ZWZ_CACHE_DIR": os.environ["ZWZ_CACHE_DIR"], "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
    submit = [RAY, "job", "submit", f"--address={two_node_cluster['dashboard']}", "--working-dir", ".",
              "--runtime-env-json", json.dumps(runtime_env), "--",
              "python", "-m", "pipelines.r2i", "--config", "configs/r2i/laptop.yaml", "--set", f"output.dir={out_dir}"]
    out = _run(submit, env, 1500)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "succeeded" in log.lower()
    report = out_dir / "report.md"
    assert report.is_file(), log[-3000:]
    summary = json.loads((out_dir / "r2i_summary.json").read_text())
    assert summary["ray"]["nodes"] == 2
