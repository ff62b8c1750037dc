"""Every notebook's wall time against its budget: at ``ci`` alone and beside a busy process, and at
``default`` alone.

    python benchmarks/notebooks.py [--modes ci busy default] [--ids 04 10] [--threads N]
                                   [--timeout S] [--out benchmarks/results/notebooks.md]
                                   [--update-runtime]

Each notebook runs as ``rlnb run`` runs it (``rlnb.runner.run_notebooks``: a fresh kernel per
notebook, started with ``rlnb.device.kernel_env()``), one at a time, and each mode's executed
notebooks and report are kept under ``runs/bench-notebooks-<time>/<mode>/``. ``busy`` is the ``ci``
run with one CPU-bound process beside it (``python -c "while True: pass"``), what a laptop doing
other work looks like to a notebook; the target is no notebook more than 2.5× slower than alone.
``--threads N`` sets ``OMP_NUM_THREADS`` for the kernels (default: ``KERNEL_THREADS``).
``--update-runtime`` rewrites the ``ci ≈ … · default ≈ …`` part of each measured notebook's
**Runtime:** line from these numbers (then paste ``rlnb list --markdown`` into the README).
Never run by the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

from timing import machine  # benchmarks/timing.py

from rlnb import runner
from rlnb.device import kernel_env
from rlnb.notebook import BUDGET_S

MODES = {"ci": "ci", "busy": "ci", "default": "default"}  # mode -> profile
SLOWDOWN_TARGET = 2.5


def busy_process() -> subprocess.Popen:
    """One CPU-bound process: a pure-Python loop, which never sleeps."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_mode(mode: str, infos, out_root: Path, timeout: float) -> dict[str, runner.Result]:
    other = busy_process() if mode == "busy" else None
    try:
        results = runner.run_notebooks(infos, out_root / mode, MODES[mode], timeout)
    finally:
        if other is not None:
            other.kill()
            other.wait()
    return {r.name: r for r in results}


def kernels() -> str:
    env = kernel_env()
    return f"kernels with OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"


def human(seconds: float) -> str:
    """``ci ≈ 40 s`` style: seconds under 100 s (to 5 s above 20 s), else minutes to 0.5."""
    if seconds < 20:
        return f"{max(round(seconds), 1)} s"
    if seconds < 100:
        return f"{5 * round(seconds / 5)} s"
    return f"{round(seconds / 30) / 2:g} min"


def cell(result: runner.Result | None, budget: float | None) -> str:
    if result is None:
        return "—"
    text = f"{result.seconds:.1f}"
    if result.status != "ok":
        text += f" ({result.status})"
    if budget and result.seconds > budget:
        text += " **over**"
    return text


def table(infos, results: dict[str, dict[str, runner.Result]]) -> list[str]:
    rows = [
        f"| notebook | ci alone (budget {BUDGET_S['ci']:g} s) | ci beside a busy process | "
        f"slowdown | default alone (budget {BUDGET_S['default']:g} s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for info in infos:
        ci, busy, default = (results.get(m, {}).get(info.name) for m in MODES)
        ratio = "—"
        if ci and busy:  # a run cut by its timeout was slower than what it shows
            ratio = f"{'>' if busy.status == 'timeout' else ''}{busy.seconds / ci.seconds:.2f}×"
        rows.append(
            f"| {info.name} | {cell(ci, BUDGET_S['ci'])} | {cell(busy, None)} | {ratio} "
            f"| {cell(default, BUDGET_S['default'])} |"
        )
    return rows


def update_runtime(info: runner.NotebookInfo, ci: float | None, default: float | None) -> None:
    """Rewrite ``ci ≈ …`` and ``default ≈ …`` in the notebook's **Runtime:** line (in the file's
    text, so nothing else in the file changes)."""
    text = info.path.read_text(encoding="utf-8")
    line = re.search(r"\*\*Runtime:\*\*[^\n]*", text)
    if line is None:
        return
    new = line.group(0)
    for profile, seconds in (("ci", ci), ("default", default)):
        if seconds is not None:
            new = re.sub(
                rf"\b{profile} ≈ [\d.]+ (s|min)", f"{profile} ≈ {human(seconds)}", new, count=1
            )
    info.path.write_text(text[: line.start()] + new + text[line.end() :], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--ids", nargs="*", default=[], help="notebook ids (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for kernels")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/notebooks.md"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per notebook")
    parser.add_argument("--update-runtime", action="store_true")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: expected a positive int, got {args.threads}")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if os.environ.pop("RLNB_THREADS", None):
        print("RLNB_THREADS unset for the benchmark: the kernels' OMP_NUM_THREADS decides")

    infos = runner.select(runner.discover(), args.ids)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_root = Path("runs") / f"bench-notebooks-{stamp}"
    results = {}
    for mode in args.modes:
        print(f"== {mode} ({MODES[mode]}{', beside a busy process' if mode == 'busy' else ''})")
        results[mode] = run_mode(mode, infos, out_root, args.timeout)

    lines = [
        "# Notebook wall times (`python benchmarks/notebooks.py`)",
        "",
        f"Measured {stamp} on {machine()}; {kernels()}. Seconds per notebook as `rlnb run` executes it "
        f"(kernel start included); executed notebooks in `{out_root}`.",
        "",
        *table(infos, results),
    ]
    if "ci" in results and "busy" in results:
        ratios = {
            name: results["busy"][name].seconds / r.seconds
            for name, r in results["ci"].items()
            if name in results["busy"]
        }
        worst = max(ratios, key=ratios.get)
        verdict = "met" if ratios[worst] <= SLOWDOWN_TARGET else "NOT met"
        lines += [
            "",
            f"Beside one busy process the largest slowdown is {ratios[worst]:.2f}× ({worst}); "
            f"target ≤ {SLOWDOWN_TARGET}×: {verdict}.",
        ]
    failed = [f"{m}/{r.name}: {r.status}" for m in results for r in results[m].values()]
    failed = [f for f in failed if not f.endswith(": ok")]
    if failed:
        lines += ["", "Not ok: " + "; ".join(failed)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    if args.update_runtime:
        for info in infos:
            ci = results.get("ci", {}).get(info.name)
            default = results.get("default", {}).get(info.name)
            update_runtime(info, ci.seconds if ci else None, default.seconds if default else None)
        print("Runtime lines updated: paste `rlnb list --markdown` into the README")


if __name__ == "__main__":
    main()
