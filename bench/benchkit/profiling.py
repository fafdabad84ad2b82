"""py-spy under load: where a server's time goes.

py-spy records collapsed stacks (``--format raw``: one ``frame;frame;... count`` line
per distinct stack). From that one recording the bench writes a speedscope profile
(open it at speedscope.app, or give the ``.collapsed`` file to any flamegraph tool) and a
text summary: samples by package and the top functions by own and by total time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

from benchkit.tools import venv_tool

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_argv(pid: int, output: Path, seconds: float, core: int, rate: int = 100) -> list[str]:
    """py-spy recording ``pid`` as collapsed stacks, pinned to the load core.

    ``--nonblocking``: py-spy reads the stacks without pausing the server. Pausing its
    ~30 threads 100 times a second cut mlgate's throughput 3-6x and skewed the profile
    towards the threads; a few samples may be garbled (py-spy counts them as errors).
    """
    return [
        "taskset",
        "-c",
        str(core),
        str(venv_tool("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--function",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
    ]


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """(frames from the root to the leaf, samples) for each line of a collapsed file."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _parts(frame: str) -> tuple[str, str, int]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, "", 0
    return match["name"], match["file"], int(match["line"] or 0)


def package(frame: str) -> str:
    """Where a frame's code lives: ``sqlalchemy``, ``starlette``, ``mlgate.api``, ..."""
    _, file, _ = _parts(frame)
    parts = [p for p in file.replace("\\", "/").split("/") if p]
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if not parts:
        return "(unknown)"
    if parts[0] == "mlgate" and len(parts) > 2:
        return f"mlgate.{parts[1]}"
    return parts[0].removesuffix(".py")


THREAD_ROOT = "Thread._bootstrap"


def split_threads(
    stacks: list[tuple[list[str], int]],
) -> tuple[list[tuple[list[str], int]], list[tuple[list[str], int]]]:
    """(event-loop thread, other threads). py-spy counts a thread blocked on a lock or a
    queue as busy, so the worker threads (aiosqlite's, anyio's) are kept apart: their
    samples include their waiting. What they really cost is in :func:`thread_cpu`."""
    main = [(s, n) for s, n in stacks if not s[0].startswith(THREAD_ROOT)]
    workers = [(s, n) for s, n in stacks if s[0].startswith(THREAD_ROOT)]
    return main, workers


def to_speedscope(stacks: list[tuple[list[str], int]], name: str) -> dict[str, object]:
    """A speedscope file with two "sampled" profiles: the event loop, the other threads."""
    index: dict[str, int] = {}
    frames: list[dict[str, object]] = []

    def profile(part: list[tuple[list[str], int]], title: str) -> dict[str, object]:
        samples, weights = [], []
        for stack, count in part:
            ids = []
            for frame in stack:
                if frame not in index:
                    index[frame] = len(frames)
                    fname, file, line = _parts(frame)
                    frames.append({"name": fname, "file": file, "line": line})
                ids.append(index[frame])
            samples.append(ids)
            weights.append(count)
        return {
            "type": "sampled",
            "name": title,
            "unit": "none",
            "startValue": 0,
            "endValue": sum(weights),
            "samples": samples,
            "weights": weights,
        }

    main, workers = split_threads(stacks)
    profiles = [profile(main, f"{name}: event loop thread")]
    if workers:
        profiles.append(profile(workers, f"{name}: other threads (waiting included)"))
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": name,
        "exporter": "mlgate bench/run.py --profile",
        "shared": {"frames": frames},
        "profiles": profiles,
    }


def _top(stacks: list[tuple[list[str], int]], top: int, by_package: bool = True) -> list[str]:
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for stack, count in stacks:
        own[stack[-1]] += count
        packages[package(stack[-1])] += count
        for frame in set(stack):
            inclusive[frame] += count
    lines = []
    if by_package:
        lines += ["own time by package:"]
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in packages.most_common(top)]
        lines += [""]
    lines += [f"top {top} functions by own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", f"top {top} functions by total time (including callees):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def thread_cpu(pid: int) -> dict[int, int]:
    """CPU time (user + system, in clock ticks) of each thread of ``pid`` so far."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_lines(pid: int, before: dict[int, int], after: dict[int, int], seconds: float) -> list[str]:
    """How much of a core the event-loop thread and the other threads used."""
    hz = os.sysconf("SC_CLK_TCK")
    used = {tid: after[tid] - before.get(tid, 0) for tid in after}
    main = used.get(pid, 0) / hz / seconds
    others = sum(v for tid, v in used.items() if tid != pid) / hz / seconds
    busy = sum(1 for tid, v in used.items() if tid != pid and v > 0)
    return [
        f"CPU while recording (from /proc): event-loop thread {100 * main:.0f}% of a core, "
        f"{len(used) - 1} other threads {100 * others:.0f}% ({busy} of them used any)",
    ]


def summary(
    stacks: list[tuple[list[str], int]], title: str, cpu: list[str] | None = None, top: int = 25
) -> str:
    """The event-loop thread by package and function; the other threads by function."""
    main, workers = split_threads(stacks)
    lines = [f"{title}: {sum(n for _, n in stacks)} samples", *(cpu or [])]
    lines += ["", f"== event-loop thread ({sum(n for _, n in main)} samples)", ""]
    lines += _top(main, top)
    if workers:
        lines += ["", f"== other threads ({sum(n for _, n in workers)} samples; py-spy counts "]
        lines[-1] += "their waiting for work as busy, see the CPU line above)"
        lines += ["", *_top(workers, 10, by_package=False)]
    return "\n".join(lines) + "\n"


def write_reports(collapsed: Path, title: str, cpu: list[str] | None = None) -> tuple[Path, Path]:
    """``<stem>.speedscope.json`` and ``<stem>.top.txt`` beside the collapsed file."""
    stacks = read_collapsed(collapsed)
    speedscope = collapsed.with_suffix(".speedscope.json")
    speedscope.write_text(json.dumps(to_speedscope(stacks, title)))
    top = collapsed.with_suffix(".top.txt")
    top.write_text(summary(stacks, title, cpu))
    return speedscope, top


def record(argv: list[str], log: Path, timeout_s: float) -> None:
    """Run py-spy; raise with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"py-spy failed ({done.returncode}): {done.stdout}{done.stderr}")
