"""A real two-node Ray cluster on localhost runs the laptop chain through `ray job submit`.

The cluster is private to the test, so it runs next to any other Ray instance on the machine: its own
temp dir (sessions, logs, sockets), its own free ports for every Ray server, its auth token in that temp
dir, and at the end it is stopped by the process ids of its own processes (never `ray stop`, which
would end every Ray instance on the machine). Ray instances that were running before the test must
still be running after it: the test signals only processes of its own nodes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
MAX_LOG_LINES = 150  # the laptop chain's whole output in a log that is not a terminal

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _free_ports(count: int) -> list[int]:
    """Distinct ports free right now (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(size: int) -> int:
    """The first port of ``size`` consecutive ports that are free now, above Ray's default worker range."""
    for start in range(20000, 30000, size):
        try:
            socks = []
            for port in range(start, start + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range for the test cluster's workers")


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


def ray_servers() -> set[int]:
    """The pids of every Ray instance's GCS and raylet on this machine."""
    return {p.pid for p in psutil.process_iter(["cmdline"])
            if any(part.endswith(("/gcs_server", "/raylet")) for part in (p.info.get("cmdline") or [])[:1])}


def cluster_processes(temp: str) -> list[int]:
    """Every process of the nodes started with ``--temp-dir=temp``: the processes `ray start` launched
    (each names the temp dir on its command line) and all their descendants (agents and workers rename
    themselves, ``ray::IDLE``, so they are found through their parents)."""
    pids: set[int] = set()
    for proc in psutil.process_iter(["cmdline"]):
        if temp in " ".join(proc.info.get("cmdline") or []):
            pids.add(proc.pid)
            with _gone():
                pids.update(child.pid for child in proc.children(recursive=True))
    pids.discard(os.getpid())
    return sorted(pids)


def stop_processes(pids: list[int], grace_s: float = 15) -> None:
    """SIGTERM the given processes, SIGKILL what is left after ``grace_s``."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for p in procs:
        with _gone():
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with _gone():
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)


class _gone:
    """Context manager: a process that exited meanwhile is fine."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, psutil.NoSuchProcess)


@pytest.fixture
def two_node_cluster():
    others = ray_servers()  # another Ray instance (a user's, another test session's) may run: leave it be
    temp = tempfile.mkdtemp(prefix="zwzc")  # short: Ray's socket paths have a length limit
    gcs, dash, client, *node_ports = _free_ports(3 + 2 * 7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray 2.60 turns token authentication on for new clusters. The token lives in the temp dir and
    # every process of this test (both nodes, the probes, `ray job submit`) reads it from there.
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN_PATH"] = "token", str(token)
    workers = _free_range(200)

    def node_flags(k: int) -> list[str]:
        p = node_ports[7 * k: 7 * k + 7]
        return [f"--temp-dir={temp}", "--node-ip-address=127.0.0.1", f"--node-manager-port={p[0]}",
                f"--object-manager-port={p[1]}", f"--metrics-export-port={p[2]}", f"--runtime-env-agent-port={p[3]}",
                f"--dashboard-agent-listen-port={p[4]}", f"--dashboard-agent-grpc-port={p[5]}",
                f"--min-worker-port={workers + 100 * k}", f"--max-worker-port={workers + 100 * k + 99}",
                "--disable-usage-stats"]

    head = [RAY, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}", "--num-cpus=3",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", *node_flags(0)]
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2", '--resources={"cpu_worker": 1}', *node_flags(1)]
    try:
        for cmd in (head, worker):
            out = _run(cmd, env, 180)
            assert out.returncode == 0, out.stdout + out.stderr
        _wait_for_nodes(env, f"127.0.0.1:{gcs}", 2)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "address": f"127.0.0.1:{gcs}", "temp": temp}
    finally:
        ours = cluster_processes(temp)
        stop_processes([pid for pid in ours if pid not in others])
        shutil.rmtree(temp, ignore_errors=True)
    # Only this cluster's processes were signalled: none of the Ray servers that ran before the test.
    # (Other instances may end on their own meanwhile, a test session finishing, so their liveness
    # afterwards is not asserted here.)
    assert not set(ours) & others, "the test cluster's processes included another Ray instance's servers"


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
    # The job log is not a terminal: Ray Data's status dumps are off and the project prints its own
    # progress lines, so the whole chain reads in a screenful or two, the report's path last.
    job_log = _job_log(env, two_node_cluster["dashboard"], log)
    (tmp_path / "job.log").write_text(job_log)  # kept by pytest for a look after a failure
    lines = job_log.rstrip("\n").splitlines()
    print(f"job log: {len(lines)} lines in {tmp_path / 'job.log'}")  # shown with `pytest -rP`
    assert len(lines) < MAX_LOG_LINES, f"{len(lines)} lines:\n{job_log[-6000:]}"
    # Ray forwards worker log lines to the driver's log asynchronously (its deduplicated "[repeated Nx across
    # cluster]" lines come seconds later), so one may land after the driver's last line: those are Ray's, prefixed
    # "(worker ...)", possibly in colour. The project's own output must end with the report's path.
    own = [line for line in lines if not re.match(r"^(\x1b\[[0-9;]*m)?\(", line)]
    assert own[-1] == f"report: {report}", lines[-5:]


def _job_log(env: dict, dashboard: str, submit_output: str) -> str:
    """The job's own log (what the driver printed), as `ray job logs` returns it."""
    job_id = next(word.strip("'") for line in submit_output.splitlines() if "submitted successfully" in line
                  for word in line.split() if word.strip("'").startswith("raysubmit_"))
    out = _run([RAY, "job", "logs", f"--address={dashboard}", job_id], env, 120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout
