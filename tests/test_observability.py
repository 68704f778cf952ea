"""Prometheus and Grafana as shipped in deploy/: `promtool` checks the rules and the scrape
configuration, the dashboard is importable JSON, and a real Prometheus (Debian's) scrapes two
real instances serving real sessions while every expression of the rules and the dashboard is
evaluated: each must succeed and return series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from holistream.client import connect
from tests.conftest import ARTIFACTS, ROOT, media
from tests.harness import stop_process

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "holistream-rules.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "holistream-dashboard.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
need_prometheus = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="Debian's prometheus is not installed (scripts/setup --test)",
)
# An alert compares one signal with a threshold (see the rules file): `SIGNAL OP NUMBER`.
_ALERT = re.compile(r"^(?P<signal>.+?)\s*(?:[<>]=?|==|!=)\s*[-+0-9.e]+$", re.S)


def rule_expressions() -> dict[str, str]:
    """Every expression of the rules file: recording rules, their recorded names, each alert
    and the signal it compares (a healthy pool fires no alert, but each signal has series)."""
    exprs: dict[str, str] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            if "record" in rule:
                exprs[f"record {rule['record']}"] = expr
                exprs[f"recorded {rule['record']}"] = rule["record"]
            else:
                match = _ALERT.match(expr)
                assert match, f"alert {rule['alert']}: not `SIGNAL OP THRESHOLD`: {expr}"
                exprs[f"alert {rule['alert']}"] = expr
                exprs[f"signal of {rule['alert']}"] = match["signal"]
    return exprs


def dashboard_expressions(rate_interval: str = "10s") -> dict[str, str]:
    """Every panel query, with Grafana's variables as an import with "All" selected sets them."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = {}
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            expr = expr.replace("$instance", ".+").replace("$job", ".+")
            exprs[f"panel {panel['title']!r} {target['refId']}"] = expr
    return exprs


@need_prometheus
def test_promtool_checks_rules_and_config() -> None:
    rules = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=30)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run([PROMTOOL, "check", "config", str(SCRAPE)], capture_output=True,
                            text=True, timeout=30)
    assert config.returncode == 0, config.stdout + config.stderr
    # Each alert fires on synthetic series of a failing instance, never on a healthy one.
    unit = subprocess.run([PROMTOOL, "test", "rules", str(RULES.with_suffix(".test.yml"))],
                          capture_output=True, text=True, timeout=30, cwd=RULES.parent)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    names = {r.get("alert") for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"]}
    # The alerts operators asked for: no workers ready, worker restarts, refusals, drop rate,
    # p99 latency, memory near budget.
    assert {"HolistreamNoWorkersReady", "HolistreamWorkerRestarts", "HolistreamRefusingSessions",
            "HolistreamFrameDropRate", "HolistreamLatencyP99High",
            "HolistreamMemoryNearBudget"} <= names


def test_dashboard_is_importable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"  # no __inputs to fill at import
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("sessions", "results/s", "drops", "latency", "refusals", "worker cpu",
                  "memory", "pipeline"):
        assert topic in titles, topic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 400 on a bad expression: the body says why
        return json.loads(exc.read())


@contextlib.contextmanager
def prometheus(tmp: Path, targets: list[str], token: str) -> Iterator[str]:
    """Debian's Prometheus on loopback, with the shipped job (its targets replaced, the token in
    the documented `credentials_file`) and rules, scraping and evaluating every second; stopped
    (SIGKILL at worst) when the block ends."""
    config = yaml.safe_load(SCRAPE.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "holistream")
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": targets}])
    (tmp / "holistream-token").write_text(token)
    job["authorization"] = {"credentials_file": str(tmp / "holistream-token")}
    shutil.copy(RULES, tmp / RULES.name)
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"prometheus-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}"
            with contextlib.suppress(OSError), urllib.request.urlopen(base + "/-/ready", timeout=1):
                break
            assert time.monotonic() < deadline, "prometheus not ready after 20 s"
            time.sleep(0.2)
        yield base
    finally:
        stop_process(proc, timeout=10)
        log.close()


async def _stream(url: str, seconds: float, token: str) -> int:
    """One holistic session sending the fixture photo at 10 fps; returns results received."""
    image = media("messi5.jpg").read_bytes()
    async with connect(url, fps=10, token=token) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await client.send_frame(image)
            await asyncio.sleep(0.1)
        return client.ledger.results


@need_prometheus
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_prometheus_scrapes_two_instances_and_every_query_returns_series(
    server_factory, tmp_path: Path
) -> None:
    flags = ("--workers", "1", "--cpus", "1", "--no-calibrate", "--max-sessions", "4")
    # One instance guards /metrics with its token (--token-all): Prometheus sends it.
    token = "prom-s3cret"
    servers = [server_factory(*flags, *extra, name=f"prom-{i}", ready=False)
               for i, extra in enumerate([(), ("--token", token, "--token-all")])]
    for srv in servers:
        await asyncio.to_thread(srv.wait_ready)
    targets = [f"127.0.0.1:{srv.port}" for srv in servers]
    queries = {**rule_expressions(), **dashboard_expressions()}
    assert servers[1].get("/metrics")[0] == 401  # guarded: no series without the token
    with prometheus(tmp_path, targets, token) as base:
        # Real sessions on both instances while Prometheus scrapes them.
        results = await asyncio.gather(*(_stream(f"ws://{t}", 6.0, token) for t in targets))
        assert all(results), results
        pending = dict(queries)
        failures: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for name, expr in list(pending.items()):
                answer = await asyncio.to_thread(_query, base, expr)
                if answer.get("status") != "success":
                    failures[name] = f"{expr}: {answer.get('error')}"
                    pending.pop(name)
                elif answer["data"]["result"] or name.startswith("alert "):
                    pending.pop(name)  # an alert of a healthy pool: no series, but it evaluates
            await asyncio.sleep(1)
        up = _query(base, 'up{job="holistream"}')["data"]["result"]
        instances = {s["metric"]["instance"] for s in up if s["value"][1] == "1"}
        values = urllib.request.urlopen(
            f"{base}/api/v1/label/instance/values?match[]=holistream_ready", timeout=5)
        listed = set(json.loads(values.read())["data"])
    assert not failures, failures
    assert not pending, {k: queries[k] for k in pending}  # evaluated, but no series
    assert instances == set(targets) and listed == set(targets)  # the dashboard's $instance
