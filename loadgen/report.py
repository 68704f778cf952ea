"""Presentation: live progress line, the final tables, the JSON report and the steps plot.

JSON report (`--json PATH`), version 1:

    {"tool": "holistream-loadgen", "report_version": 1, "started_at": ISO-8601,
     "config": {url, mode, fps, in_flight, format, parts, duration_s, ramp_per_s, source,
                frames, frame_bytes_mean, steps},
     "interrupted": bool,
     "stages": [ {                                   # one per client count (one without --steps)
        "clients", "mode", "fps", "in_flight", "format", "elapsed_s", "steady_s", "interrupted",
        "sessions": {ok, refused, failed, unfinished, rejections: {http_503, close_1013},
                     final_stats_missing, unbalanced},
        "frames": {sent, results, frame_errors, dropped, dropped_in_results, dropped_final,
                   unanswered, balanced, discrepancy, skipped_local,
                   dropped_by_reason: {superseded, stale, ...}},   # from the closing stats
        "rates": {sent_per_s, results_per_s},        # results_per_s over the steady window
        "drop_pct", "error_pct",          # % of frames sent; error = frame errors + unanswered
        "latency_ms" | "server_total_ms" | "connect_ms":
            {count, min, mean, p50, p90, p95, p99, p99_9, max},
        "per_session_fps": {min, median, mean, max, jain},
        "errors": {kind: count},
        "generator": {cpu_pct_mean, cpu_pct_max, host_cpu_pct_mean, lag_ms: {...},
                      send_block_ms: {...}, bottleneck, host_saturated, reasons: [str]},
        "server": {metrics_url, cpu_cores, cpu_pct, main_cpu_cores, workers_cpu_cores},
        "timeline": [{t, connected, sent_per_s, results_per_s, p50_ms, p99_ms, dropped, errors,
                      generator_cpu, host_cpu}]}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from loadgen.runner import Stage, Tick
from loadgen.stats import Totals


def _ms(v: float | None) -> str:
    return "–" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def progress_line(stage: Stage, tick: Tick, totals: Totals) -> str:
    return (
        f"[{tick.t:5.0f}s] clients {tick.connected}/{stage.clients}  "
        f"sent/s {tick.sent_per_s:7.1f}  results/s {tick.results_per_s:7.1f}  "
        f"p50 {_ms(tick.p50_ms)} ms  p99 {_ms(tick.p99_ms)} ms  drops {tick.dropped}  "
        f"errors {tick.errors}  rejected {sum(totals.rejections.values())}  "
        f"cpu gen {tick.generator_cpu:.0f}% host {tick.host_cpu:.0f}%"
    )


def stage_table(s: dict[str, Any]) -> Table:
    """The final figures of one stage, grouped the way an operator reads them."""
    t = Table(title=f"{s['clients']} clients, {s['mode']} loop, {s['fps']} fps", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("figures")
    ses, fr, lat = s["sessions"], s["frames"], s["latency_ms"]
    t.add_row(
        "sessions",
        f"ok {ses['ok']}  refused {ses['refused']}  failed {ses['failed']}  "
        f"unfinished {ses['unfinished']}  rejections "
        + (" ".join(f"{k} {v}" for k, v in ses["rejections"].items()) or "0"),
    )
    t.add_row(
        "frames",
        f"sent {fr['sent']}  results {fr['results']}  dropped {fr['dropped']} "
        f"({fr['dropped_in_results']} in results + {fr['dropped_final']} final)  "
        f"frame errors {fr['frame_errors']}  unanswered {fr['unanswered']}  "
        f"skipped locally {fr['skipped_local']}",
    )
    if fr["dropped_by_reason"]:
        why = "  ".join(f"{k} {v}" for k, v in sorted(fr["dropped_by_reason"].items()))
        t.add_row("drops by reason", why)
    balance = "balanced" if fr["balanced"] else f"OFF BY {fr['discrepancy']}"
    t.add_row("books", f"sent = results + errors + dropped + unanswered: {balance}")
    t.add_row(
        "rates",
        f"sent/s {s['rates']['sent_per_s']:.1f}  results/s {s['rates']['results_per_s']:.1f}  "
        f"drop {_num(s['drop_pct'])}%  error {_num(s['error_pct'], '{:.2f}')}%",
    )
    t.add_row(
        "latency ms",
        "  ".join(f"{k} {_ms(lat[k])}" for k in ("p50", "p90", "p95", "p99", "p99_9", "max")),
    )
    srv, con = s["server_total_ms"], s["connect_ms"]
    t.add_row("server total_ms", f"p50 {_ms(srv['p50'])}  p99 {_ms(srv['p99'])}")
    t.add_row("connect ms", f"p50 {_ms(con['p50'])}  p99 {_ms(con['p99'])}  max {_ms(con['max'])}")
    f = s["per_session_fps"]
    t.add_row(
        "per-session fps",
        f"min {_num(f['min'])}  median {_num(f['median'])}  max {_num(f['max'])}  "
        f"Jain {_num(f['jain'], '{:.3f}')}",
    )
    gr = s.get("granted_fps")
    if gr and gr.get("min") is not None:
        t.add_row(
            "granted fps",
            f"sum {_num(gr['sum'])}  min {_num(gr['min'])}  max {_num(gr['max'])}  "
            f"grant messages {gr['changes']}",
        )
    if s["errors"]:
        t.add_row("errors", "  ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())))
    g = s["generator"]
    t.add_row(
        "generator",
        f"cpu mean {_num(g['cpu_pct_mean'], '{:.0f}')}%  max {_num(g['cpu_pct_max'], '{:.0f}')}%"
        f"  host {_num(g['host_cpu_pct_mean'], '{:.0f}')}%  lag p99 {_ms(g['lag_ms']['p99'])} ms"
        f"  send blocked p99 {_ms(g['send_block_ms']['p99'])} ms",
    )
    cores = [_num(s["server"][k], "{:.2f}") for k in ("cpu_cores", "main_cpu_cores")]
    workers = _num(s["server"]["workers_cpu_cores"], "{:.2f}")
    t.add_row("server cpu", f"{cores[0]} cores (main {cores[1]}, workers {workers})")
    for reason in g["reasons"]:
        t.add_row("[yellow]warning[/]", f"[yellow]{reason}[/]")
    return t


def steps_table(stages: Sequence[dict[str, Any]]) -> Table:
    """One row per client count: the table for sizing a deployment."""
    t = Table(title="capacity by client count")
    cols = (
        "clients",
        "ok",
        "refused",
        "results/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "drop %",
        "error %",
        "Jain",
        "server cpu %",
        "gen cpu %",
    )
    for c in cols:
        t.add_column(c, justify="right")
    for s in stages:
        lat = s["latency_ms"]
        t.add_row(
            str(s["clients"]),
            str(s["sessions"]["ok"]),
            str(s["sessions"]["refused"]),
            f"{s['rates']['results_per_s']:.1f}",
            _ms(lat["p50"]),
            _ms(lat["p95"]),
            _ms(lat["p99"]),
            _num(s["drop_pct"]),
            _num(s["error_pct"], "{:.2f}"),
            _num(s["per_session_fps"]["jain"], "{:.3f}"),
            _num(s["server"]["cpu_pct"], "{:.0f}"),
            _num(s["generator"]["cpu_pct_mean"], "{:.0f}")
            + (" [yellow]![/]" if s["generator"]["bottleneck"] else "")
            + (" [yellow]host![/]" if s["generator"]["host_saturated"] else ""),
        )
    return t


def print_report(console: Console, report: dict[str, Any]) -> None:
    for stage in report["stages"]:
        console.print(stage_table(stage))
    if len(report["stages"]) > 1:
        console.print(steps_table(report["stages"]))
    if report["interrupted"]:
        console.print("[yellow]interrupted: partial report[/]")


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def plot_steps(path: str | Path, stages: Sequence[dict[str, Any]]) -> None:
    """Throughput and latency against client count, one PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = [s["clients"] for s in stages]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.plot(clients, [s["rates"]["results_per_s"] for s in stages], "o-", label="results/s")
    top.plot(clients, [s["rates"]["sent_per_s"] for s in stages], "o--", label="sent/s")
    top.set_ylabel("frames / s")
    drops = top.twinx()
    drops.plot(clients, [s["drop_pct"] or 0 for s in stages], "x:", color="tab:red")
    drops.set_ylabel("drop %", color="tab:red")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    for key in ("p50", "p95", "p99"):
        values = [s["latency_ms"][key] for s in stages]
        bottom.plot(clients, [float("nan") if v is None else v for v in values], "o-", label=key)
    if len(clients) > 1 and max(clients) >= 4 * min(clients):
        bottom.set_xscale("log", base=2)  # doubling steps read evenly
    bottom.set_xlabel("clients")
    bottom.set_ylabel("send → result latency (ms)")
    bottom.legend(loc="upper left")
    bottom.grid(alpha=0.3)
    fig.suptitle("holistream capacity")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
