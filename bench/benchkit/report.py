"""Medians of the rounds, the one table, and issue 9's targets as met / not met."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from benchkit.workloads import WrkResult

Status = Literal["ok", "skipped", "failed"]
# Which MLServer workload a workload is compared with: binary tensors against its JSON.
MLSERVER_BASELINE = {"W1": "W1", "W2-json": "W2-json", "W2-bin": "W2-json"}


@dataclass
class Cell:
    """One server configuration under one workload: its rounds, or why it did not run."""

    config: str
    label: str
    kind: str
    workload: str
    rows: int
    status: Status = "ok"
    message: str = ""
    rounds: list[WrkResult] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    """CPU the server's process tree used in each round, in % of one core."""
    rss_mb: float | None = None
    ready_s: float | None = None
    served_by: str = ""
    """mlgate: what served the MLP once settled (its ``execution``: a twin made at this
    start, one kept from an earlier start, or scikit-learn)."""
    log_errors: int | None = None
    """Error or traceback lines in the server's log (the whole run of its configuration)."""
    audit_rows: int = 0
    """Rows mlgate answered in the measured rounds (counted when its audit log is on)."""
    audit_dropped: int | None = None
    """Of those, rows its audit log did not record (queue full); None: no audit log."""

    @property
    def audit_kept(self) -> float | None:
        """Share of the answered rows the audit log recorded (None: no audit log)."""
        if self.audit_dropped is None or not self.audit_rows:
            return None
        return max(0.0, 1.0 - self.audit_dropped / self.audit_rows)

    @property
    def audit_incomplete(self) -> bool:
        """The audit log dropped rows: the configuration did not do all its work."""
        return bool(self.audit_dropped)

    def _median(self, value: Callable[[WrkResult], float]) -> float | None:
        return statistics.median(value(r) for r in self.rounds) if self.rounds else None

    @property
    def measured(self) -> bool:
        return self.status == "ok" and bool(self.rounds)

    @property
    def req_per_s(self) -> float | None:
        return self._median(lambda r: r.req_per_s)

    @property
    def rows_per_s(self) -> float | None:
        rate = self.req_per_s
        return None if rate is None else rate * self.rows

    @property
    def p50_ms(self) -> float | None:
        return self._median(lambda r: r.p50_ms)

    @property
    def p99_ms(self) -> float | None:
        return self._median(lambda r: r.p99_ms)

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpu_pct) if self.cpu_pct else None

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "label": self.label,
            "workload": self.workload,
            "rows_per_request": self.rows,
            "status": self.status,
            "message": self.message,
            "median": {
                "req_per_s": _round(self.req_per_s, 1),
                "rows_per_s": _round(self.rows_per_s, 1),
                "p50_ms": _round(self.p50_ms, 3),
                "p99_ms": _round(self.p99_ms, 3),
                "server_cpu_pct": _round(self.cpu, 1),
            },
            "errors": self.errors,
            "rss_mb": _round(self.rss_mb, 1),
            "ready_s": _round(self.ready_s, 3),
            "served_by": self.served_by,
            "server_log_error_lines": self.log_errors,
            "audit": None
            if self.audit_dropped is None
            else {"rows_answered": self.audit_rows, "rows_dropped": self.audit_dropped},
            "rounds": [
                {**r.as_dict(), "server_cpu_pct": round(c, 1)}
                for r, c in zip(self.rounds, self.cpu_pct, strict=False)
            ],
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def find(cells: list[Cell], config: str, workload: str) -> Cell | None:
    return next((c for c in cells if c.config == config and c.workload == workload), None)


def ratio(cell: Cell, base: Cell | None) -> float | None:
    if base is None or not cell.measured or not base.measured:
        return None
    mine, theirs = cell.rows_per_s, base.rows_per_s
    return mine / theirs if mine is not None and theirs else None


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table(cells: list[Cell]) -> str:
    """The Markdown table: one row per server and workload, medians of the rounds."""
    head = (
        "| server | workload | req/s | p50 ms | p99 ms | rows/s | × MLServer | × ceiling "
        "| CPU % | RSS MB | ready s | audit kept | errors |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for cell in cells:
        if not cell.measured:
            what = "skipped" if cell.status == "skipped" else "**FAILED**"
            lines.append(
                f"| {cell.label} | {cell.workload} | {what}: {cell.message} | | | | | | | | | | |"
            )
            continue
        baseline = MLSERVER_BASELINE.get(cell.workload)
        versus_mlserver = ratio(cell, find(cells, "mlserver", baseline) if baseline else None)
        versus_ceiling = ratio(cell, find(cells, "ceiling", cell.workload))
        errors = f"**{cell.errors} (flagged)**" if cell.errors else "0"
        kept = cell.audit_kept
        audit = "—" if kept is None else f"{kept:.0%}" if kept >= 1 else f"**{kept:.1%}**"
        lines.append(
            f"| {cell.label} | {cell.workload} | {_num(cell.req_per_s, ',.0f')} "
            f"| {_num(cell.p50_ms, '.2f')} | {_num(cell.p99_ms, '.2f')} "
            f"| {_num(cell.rows_per_s, ',.0f')} | {_num(versus_mlserver, '.2f')} "
            f"| {_num(versus_ceiling, '.3f')} | {_num(cell.cpu, '.0f')} "
            f"| {_num(cell.rss_mb, '.0f')} "
            f"| {_num(cell.ready_s, '.2f')} | {audit} | {errors} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    """A target of issue 9 and how this run fared: met, not met, or not measured."""

    target: str
    status: Literal["met", "not met", "not measured"]
    detail: str

    def line(self) -> str:
        mark = {"met": "MET", "not met": "NOT MET", "not measured": "not measured"}[self.status]
        return f"- {self.target}: **{mark}** — {self.detail}"


def _versus(
    cells: list[Cell], target: str, mine: tuple[str, str], base: tuple[str, str], factor: float
) -> Outcome:
    cell, other = find(cells, *mine), find(cells, *base)
    for c, who in ((cell, mine), (other, base)):
        if c is None or not c.measured:
            why = c.message if c is not None and c.message else "not run"
            return Outcome(target, "not measured", f"{who[0]} {who[1]}: {why}")
    assert cell is not None and other is not None
    r = ratio(cell, other) or 0.0
    detail = f"{r:.2f}× ({cell.rows_per_s:,.0f} vs {other.rows_per_s:,.0f} rows/s)"
    if cell.errors or other.errors:
        return Outcome(target, "not met", detail + "; the run had errors under load")
    if cell.audit_incomplete:
        kept = cell.audit_kept or 0.0
        detail += f"; its audit log recorded only {kept:.1%} of the rows (queue full)"
        return Outcome(target, "not met", detail)
    return Outcome(target, "met" if r >= factor else "not met", detail)


# (target, (configuration, workload), (baseline configuration, workload), factor):
# met when the first's rows/s are at least `factor` times the baseline's.
RATIO_TARGETS: tuple[tuple[str, tuple[str, str], tuple[str, str], float], ...] = (
    ("W1, (a) all production features: ≥ 3× MLServer, p99 ≤ 10 ms",
     ("mlgate", "W1"), ("mlserver", "W1"), 3.0),
    ("W1, (b) Redis rate limits: ≥ 2× MLServer",
     ("mlgate-redis", "W1"), ("mlserver", "W1"), 2.0),
    ("W2 JSON, (a): ≥ 1.5× MLServer rows/s",
     ("mlgate", "W2-json"), ("mlserver", "W2-json"), 1.5),
    ("W2 binary tensors, (a): ≥ 5× MLServer's JSON rows/s",
     ("mlgate", "W2-bin"), ("mlserver", "W2-json"), 5.0),
    ("Batching on vs off, 64 connections: ≥ 1.3× req/s",
     ("mlgate-batch-on", "W1-c64"), ("mlgate-batch-off", "W1-c64"), 1.3),
)  # fmt: skip
W1_P99_MS = 10.0
READY_S = 3.0
RSS_MB = 300.0


def _twin_starts(mlgate: list[Cell]) -> str:
    """The slowest start of each kind: the MLP served by numpy (read without scikit-learn),
    or by an ONNX twin made at that start (scikit-learn loaded first) or kept from an
    earlier one (scikit-learn never loaded)."""
    kinds = {"numpy": "numpy (", "twin made": "converted from", "twin kept": "kept twin of"}
    parts = []
    for kind, marker in kinds.items():
        times = [c.ready_s for c in mlgate if c.ready_s is not None and marker in c.served_by]
        if times:
            parts.append(f"{kind}: {max(times):.2f} s")
    return f"; {', '.join(parts)}" if parts else ""


def targets(cells: list[Cell]) -> list[Outcome]:
    """Issue 9's targets, from this run's cells."""
    outcomes = [_versus(cells, *target) for target in RATIO_TARGETS]
    w1, cell = outcomes[0], find(cells, "mlgate", "W1")
    if w1.status != "not measured" and cell is not None and cell.p99_ms is not None:
        met = w1.status == "met" and cell.p99_ms <= W1_P99_MS
        detail = f"{w1.detail}; p99 {cell.p99_ms:.1f} ms"
        outcomes[0] = Outcome(w1.target, "met" if met else "not met", detail)
    mlgate = [c for c in cells if c.kind == "mlgate" and c.measured]
    ready = {c.config: c.ready_s for c in mlgate if c.ready_s is not None}
    if ready:
        worst = max(ready, key=lambda k: ready[k])
        outcomes.append(
            Outcome(
                "Ready ≤ 3 s after start",
                "met" if ready[worst] <= READY_S else "not met",
                f"slowest {ready[worst]:.2f} s ({worst}){_twin_starts(mlgate)}",
            )
        )
    else:
        outcomes.append(Outcome("Ready ≤ 3 s after start", "not measured", "no mlgate ran"))
    rss = [(c.rss_mb, c) for c in mlgate if c.rss_mb is not None]
    if rss:
        most, cell = max(rss, key=lambda item: item[0])
        outcomes.append(
            Outcome(
                "RSS ≤ 300 MB per worker (bundled models + the MLP)",
                "met" if most <= RSS_MB else "not met",
                f"largest {most:.0f} MB ({cell.config}, after {cell.workload})",
            )
        )
    else:
        outcomes.append(Outcome("RSS ≤ 300 MB per worker", "not measured", "no mlgate ran"))
    return outcomes
