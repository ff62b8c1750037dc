"""The ``rlnb`` command: ``rlnb list``, ``rlnb run`` and ``rlnb kernel``.

Exit codes of ``rlnb run``: 0 all notebooks passed; 1 at least one failed or timed out;
2 bad usage (unknown notebook id, output directory not empty, bad --param); 130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from rlnb import runner
from rlnb.notebook import PROFILES

COLAB = "https://colab.research.google.com/github/rlnb/rlnb/blob/main/notebooks/{name}.ipynb"


def _exercises(info: runner.NotebookInfo) -> str:
    """``2: `gae`, `vtrace` `` (how many "Try it" cells, and what they grade), or ``—``."""
    names = ", ".join(f"`{n}`" for n in info.exercises)
    return f"{len(info.exercises)}: {names}" if info.exercises else "—"


def markdown_table(infos: list[runner.NotebookInfo]) -> str:
    """The README's notebook table (``rlnb list --markdown``)."""
    rows = [
        "| # | notebook | builds on | papers | exercises | runtime | Colab |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in infos:
        badge = f"[open]({COLAB.format(name=i.name)})"
        rows.append(
            f"| {i.id} | [{i.title}](notebooks/{i.name}.ipynb) | {i.builds_on or '—'} "
            f"| {i.papers} | {_exercises(i)} | {i.runtime} | {badge} |"
        )
    return "\n".join(rows)


def install_kernel(prefix: Path) -> Path:
    """Install the ``python3`` kernelspec of this Python under ``prefix`` with rlnb's kernel
    environment (``rlnb.device.kernel_env``: ``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``), so the
    kernels JupyterLab starts keep their speed beside other work as ``rlnb run``'s do."""
    from ipykernel.kernelspec import install

    from rlnb.device import kernel_env

    env = {k: kernel_env()[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    path = install(
        prefix=str(prefix), kernel_name="python3", display_name="Python 3 (rlnb)", env=env
    )
    print(f"kernelspec python3 installed in {path} with {env}")
    return Path(path)


def _parse_param(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as a Python literal when it is one (``SEED=3``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"--param: expected KEY=VALUE with KEY an identifier, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlnb", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--notebooks", type=Path, default=None, help="notebooks directory (default: ./notebooks)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="number, title, papers and runtime of every notebook")
    p_list.add_argument("--markdown", action="store_true", help="print the README's markdown table")
    p_run = sub.add_parser("run", help="execute notebooks headless and write a report")
    p_run.add_argument("ids", nargs="*", help="notebook numbers or names (default: all)")
    p_run.add_argument("--profile", choices=PROFILES, default="ci")
    p_run.add_argument(
        "--out", type=Path, default=None, help="output directory (default: runs/<timestamp>)"
    )
    p_run.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per notebook (default 600)"
    )
    p_run.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="override a parameter"
    )
    p_kernel = sub.add_parser(
        "kernel", help="install this Python's kernelspec with rlnb's kernel environment"
    )
    p_kernel.add_argument(
        "--prefix", type=Path, default=Path(sys.prefix), help="install prefix (default: sys.prefix)"
    )
    args = parser.parse_args(argv)
    if args.command == "kernel":
        install_kernel(args.prefix)
        return 0

    try:
        infos = runner.discover(args.notebooks)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rlnb: {exc}", file=sys.stderr)
        return 2
    if not infos:
        where = args.notebooks or runner.notebooks_dir()
        print(f"rlnb: no notebook (NN_slug.ipynb) in {where}", file=sys.stderr)
        return 2
    if args.command == "list":
        broken = [i for i in infos if i.error]
        infos = [i for i in infos if not i.error]
        if args.markdown:
            print(markdown_table(infos))
        else:
            for i in infos:
                print(
                    f"{i.id}  {i.title}\n    builds on: {i.builds_on or '-'}"
                    f"\n    papers: {i.papers or '-'}\n    runtime: {i.runtime or '-'}"
                    f"\n    exercises: {', '.join(i.exercises) or '-'}"
                )
        for i in broken:
            print(f"rlnb: {i.error}", file=sys.stderr)
        return 1 if broken else 0

    try:
        chosen = runner.select(infos, args.ids)
        params = dict(_parse_param(p) for p in args.param)
        out = args.out or runner.default_out_dir()
        if not args.timeout > 0:  # NaN too
            raise ValueError(
                f"--timeout: expected a positive number of seconds, got {args.timeout}"
            )
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out: {out} is a file; expected a new or empty directory")
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(
                f"--out: {out} already exists and is not empty; choose a new directory"
            )
    except (KeyError, ValueError, FileExistsError) as exc:
        print(f"rlnb: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"rlnb run: {len(chosen)} notebook(s) at profile {args.profile!r} into {out}")
    try:
        results = runner.run_notebooks(chosen, out, args.profile, args.timeout, params)
    except KeyboardInterrupt:
        print(
            f"rlnb: interrupted; the report of what finished is in {out / 'index.html'}",
            file=sys.stderr,
        )
        return 130
    bad = [r for r in results if r.status != "ok"]
    print(f"report: {out / 'index.html'} (and {out / 'summary.md'})")
    for r in bad:
        print(f"rlnb: {r.name} {r.status}: {r.error}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
