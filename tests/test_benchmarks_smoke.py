"""The benchmark suite works: every scenario runs at tiny scale through the real code path.

`python -m benchmarks --smoke` starts the real simulators and sidecar processes
on port 0 and drives them over real sockets for about a second per scenario.
Nothing here looks at how fast anything was: the figures of a smoke run mean
nothing, only that every figure, file and table is produced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import compare
from benchmarks.cli import main as bench_main
from benchmarks.load import Sample, closed_loop, open_loop
from benchmarks.scenarios import SCENARIOS
from benchmarks.targets import Status, Target, evaluate, failed, load_targets

ROOT = Path(__file__).parent.parent
# The suite bounds each scenario itself; this only stops a hung run from hanging the tests.
RUN_TIMEOUT = 180.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Run:
    process: subprocess.CompletedProcess[str]
    out: Path
    results: dict[str, Any]


def _run_cli(out: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "benchmarks", "--smoke", "--no-progress", "--out", str(out)]
    with subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGINT, not SIGKILL: the suite then stops the processes it started.
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=30)
            pytest.fail(f"the smoke run did not finish in {RUN_TIMEOUT:g} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("bench")
    process = _run_cli(out)
    # 0: every target met, 1: some target missed (the figures of a smoke run mean nothing).
    assert process.returncode in (0, 1), process.stderr[-5000:]
    return Run(process, out, orjson.loads((out / "results.json").read_bytes()))


def test_every_scenario_ran_and_reported_data(smoke: Run) -> None:
    scenarios = smoke.results["scenarios"]
    assert list(scenarios) == list(SCENARIOS)
    for name, result in scenarios.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        assert result["data"], name
    assert smoke.results["meta"]["scale"] == "smoke"


def test_every_target_got_a_figure(smoke: Run) -> None:
    verdicts = smoke.results["targets"]
    assert [v["id"] for v in verdicts] == [t.id for t in load_targets()]
    for verdict in verdicts:
        assert verdict["status"] in ("pass", "FAIL", "info-miss"), verdict
        assert isinstance(verdict["measured"], float), verdict


def test_the_table_is_printed(smoke: Run) -> None:
    for target in load_targets():
        assert target.id in smoke.process.stdout
    assert "results.json" in smoke.process.stdout
    # The floors and the sidecar's own share are printed too, per door.
    assert "added = floor" in smoke.process.stdout
    assert "grpc  stream instant x50" in smoke.process.stdout


def test_report_and_plots_are_written(smoke: Run) -> None:
    report = (smoke.out / "report.md").read_text()
    assert "## Targets" in report
    for scenario in SCENARIOS.values():
        assert f"## {scenario.title}" in report
    images = [line[line.index("(") + 1 : -1] for line in report.splitlines() if line[:2] == "!["]
    expected = {"route.png", "overhead_throughput.png", "hybrid_tiers.png", "failover_timeline.png"}
    assert expected <= set(images)
    assert any(name.startswith("overhead_ttft_cdf_") for name in images)
    for name in images:
        assert (smoke.out / name).read_bytes().startswith(PNG_MAGIC), name


def test_the_load_reached_every_path(smoke: Run) -> None:
    data = smoke.results["scenarios"]
    points = data["overhead"]["data"]["points"]
    assert {p["path"] for p in points} == {
        "grpc",
        "http",
        "anthropic",
        "gemini",
        "messages",
        "responses",
    }
    assert {p["mode"] for p in points} == {"stream", "unary", "burst"}
    for point in points:
        floor = ("floor",) if point["path"] in ("grpc", "http") else ()
        for side in ("direct", "relayed", *floor):
            assert point[side]["n"] > 0, point
            assert point[side]["failures"] == 0, point
    # Each floor-measured figure splits into the floor's share and the sidecar's own.
    grpc = next(p for p in points if p["path"] == "grpc" and p["mode"] == "stream")
    assert grpc["own"]["ttft_p50_ms"] == pytest.approx(
        grpc["added"]["ttft_p50_ms"] - grpc["floor_added"]["ttft_p50_ms"]
    )
    footprint = data["footprint"]["data"]
    assert footprint["startup_median_s"] > 0
    assert footprint["rss_idle_mib"] > 0
    hybrid = data["hybrid"]["data"]
    assert hybrid["overall"]["n"] > 0
    assert sum(t["n"] for t in hybrid["tiers"]) == hybrid["overall"]["n"]
    failover = data["failover"]["data"]
    assert failover["overall"]["n"] > 0
    assert failover["timeline"]


def test_compare_reads_two_runs(smoke: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main([str(smoke.out), str(smoke.out / "results.json"), "--all"]) == 0
    printed = capsys.readouterr().out
    assert "route-1k-p99" in printed
    assert "hybrid.ttft_p50_ms" in printed


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown scenario"):
        bench_main(["--only", "route,nope"])


# -- targets ----------------------------------------------------------------------------------


def _target(**fields: Any) -> Target:
    base: dict[str, Any] = {
        "id": "t",
        "description": "",
        "measure": "overhead.a",
        "baseline": None,
        "compare": "value",
        "bound_kind": "below",
        "bound": 1.0,
        "unit": "ms",
        "source": "",
    }
    return Target(**(base | fields))


def test_targets_compare_against_the_baseline_of_the_same_run() -> None:
    metrics = {"overhead.a": 10.5, "overhead.b": 10.0, "overhead.nan": float("nan")}
    difference = _target(baseline="overhead.b", compare="difference")
    ratio = _target(id="r", baseline="overhead.b", compare="ratio", bound_kind="at_least")
    missing = _target(id="m", measure="overhead.nan")
    skipped = _target(id="s", measure="route.x")
    claim = _target(id="c", gate=False)
    verdicts = evaluate([difference, ratio, missing, skipped, claim], metrics, ["overhead"])
    assert [(v.measured, v.status) for v in verdicts] == [
        (0.5, Status.PASS),
        (1.05, Status.PASS),
        (None, Status.MISSING),
        (None, Status.SKIPPED),
        (10.5, Status.INFO),
    ]
    assert [v.target.id for v in failed(verdicts)] == ["m"]


def test_a_broken_targets_file_names_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "targets:\n"
        "  - {id: a, measure: route.x, below: 1, above: 2}\n"
        "  - {id: b, measure: route.x, baseline: route.y, compare: sum, below: 1}\n"
        "  - {id: c, measure: route.x, below: fast, colour: red}\n"
    )
    with pytest.raises(ValueError, match=r"targets\[0\] \(a\): give exactly one") as caught:
        load_targets(path)
    message = str(caught.value)
    assert "targets[1] (b).compare" in message
    assert "targets[2] (c).below: expected a number" in message
    assert "unknown key(s) colour" in message


def test_the_shipped_targets_load() -> None:
    targets = load_targets()
    assert {t.scenario for t in targets} == set(SCENARIOS)


# -- the load generator -----------------------------------------------------------------------


async def _ok() -> Sample:
    return Sample(0.0, 0.0, ok=True)


async def test_closed_loop_makes_exactly_the_requests_asked() -> None:
    samples = await closed_loop(_ok, concurrency=3, requests=7, time_limit=10, ramp=0.01)
    assert len(samples) == 7
    assert all(s.ok for s in samples)


async def test_open_loop_stamps_each_call_with_when_it_was_due() -> None:
    samples = await open_loop(_ok, rate=500, requests=5, time_limit=10)
    starts = [s.start for s in samples]
    assert len(samples) == 5
    assert starts == sorted(starts)
    assert all(s.late >= 0 for s in samples)


async def test_a_failing_call_becomes_a_failed_sample() -> None:
    async def refused() -> Sample:
        raise ConnectionRefusedError("nobody there")

    samples = await closed_loop(refused, concurrency=2, requests=3, time_limit=10)
    assert [s.ok for s in samples] == [False] * 3
    assert "nobody there" in samples[0].error
