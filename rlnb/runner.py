"""Execute notebooks headless with papermill and write a report.

``run_notebooks`` executes each notebook in-process through papermill at a profile, writes the
executed notebook, its HTML rendering, the metrics it recorded (``rlnb.notebook.record``) and a
report (``metrics.json``, ``summary.md``, ``index.html``) into one output directory. The report is
rewritten after every notebook, so nothing already finished is lost when a later one fails or the
run is interrupted. ``run_notebook`` executes one and is what the test suite calls.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import os
import platform
import re
import signal
import subprocess
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from rlnb.device import kernel_env
from rlnb.notebook import BUDGET_S, EXERCISE_METRIC, METRICS_ENV, PROFILES, read_records
from rlnb.progress import PROGRESS_ENV

# ``NN_slug.ipynb``, or ``NNx_slug.ipynb`` (a letter: a notebook that extends ``NN``, sorted after it)
NAME_RE = re.compile(r"^(\d\d[a-z]?)_([a-z0-9_]+)\.ipynb$")


@dataclass
class NotebookInfo:
    """What ``rlnb list`` shows, read from the notebook's title cell."""

    id: str  # "00", or "06b" for a notebook that extends 06
    name: str  # "00_tour"
    path: Path
    title: str
    papers: str
    runtime: str
    builds_on: str = ""  # "01, 02": the notebooks to read first ("—" for none)
    exercises: tuple[str, ...] = ()  # the names its "Try it" cells grade, in order
    error: str = ""  # why the file could not be read (a corrupt .ipynb); empty when it could

    @property
    def order(self) -> tuple[int, str]:
        """Sort key: number, then letter (``06`` < ``06b`` < ``07``)."""
        return int(self.id[:2]), self.id[2:]


@dataclass
class Result:
    """The outcome of executing one notebook."""

    name: str
    status: str  # "ok" | "failed" | "timeout" | "interrupted"
    seconds: float
    metrics: dict = field(default_factory=dict)
    error: str = ""  # one line: cell index, first source line, exception
    traceback: str = ""
    ipynb: str = ""  # paths relative to the output directory
    html: str = ""


def notebooks_dir() -> Path:
    """``$RLNB_NOTEBOOKS``, else ``./notebooks``, else the repository's ``notebooks/`` next to the package."""
    for cand in (
        os.environ.get("RLNB_NOTEBOOKS"),
        "notebooks",
        Path(__file__).resolve().parent.parent / "notebooks",
    ):
        if cand and Path(cand).is_dir():
            return Path(cand).resolve()
    raise FileNotFoundError(
        "no notebooks/ directory found: run from the repository root or set RLNB_NOTEBOOKS"
    )


# a "Try it" cell: ``exercises.check("gae", my_gae)`` (rlnb.exercises)
EXERCISE_RE = re.compile(r'exercises\.check\(\s*"(\w+)"')


def _field(text: str, key: str) -> str:
    m = re.search(rf"\*\*{key}:\*\*\s*(.+)", text)
    return m.group(1).strip() if m else ""


def read_info(path: Path) -> NotebookInfo:
    """Number, title, papers, runtime and reading order from the first markdown cell:
    ``# NN · Title``, then lines ``**Papers:** ...``, ``**Runtime:** ...`` and ``**Builds on:** ...``;
    the exercises from the code cells' ``exercises.check("name", ...)`` calls."""
    path = Path(path)
    m = NAME_RE.match(path.name)
    if not m:
        raise ValueError(
            f"path: expected a notebook named NN_slug.ipynb or NNx_slug.ipynb (two digits, an "
            f"optional lower-case letter, '_', then lower-case letters, digits and '_'), "
            f"got {path.name!r}"
        )
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # corrupt JSON, not a notebook: say which file, let the others run
        error = f"{path.name}: cannot read the notebook ({type(exc).__name__}: {exc})"
        return NotebookInfo(m.group(1), path.stem, path, "", "", "", error=error.splitlines()[0])
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    heading = next((ln for ln in first.splitlines() if ln.startswith("# ")), f"# {path.stem}")
    title = re.sub(r"^#\s*(\d+[a-z]?\s*[·:.-]\s*)?", "", heading).strip()
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return NotebookInfo(
        m.group(1),
        path.stem,
        path,
        title,
        _field(first, "Papers"),
        _field(first, "Runtime"),
        _field(first, "Builds on"),
        tuple(EXERCISE_RE.findall(code)),
    )


def discover(directory: Path | None = None) -> list[NotebookInfo]:
    """Every notebook in the notebooks directory, ordered by number then letter.

    Raises ``ValueError`` for any ``.ipynb`` whose name is not ``NN_slug`` or ``NNx_slug``: a
    misnamed notebook would otherwise be silently left out of ``rlnb run`` and the tests; and
    ``FileNotFoundError`` when ``directory`` is not a directory. A notebook that cannot be read is
    listed with its ``error`` (``run_notebook`` reports it as failed), so the others still run.
    """
    directory = Path(directory) if directory else notebooks_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"--notebooks: {directory} is not a directory")
    return sorted((read_info(p) for p in directory.glob("*.ipynb")), key=lambda i: i.order)


def select(infos: list[NotebookInfo], ids: list[str]) -> list[NotebookInfo]:
    """Pick notebooks by number (``1``, ``01``, ``6b``, ``06b``) or name (``01_returns_and_td``);
    unknown ids raise ``KeyError``."""
    if not ids:
        return infos
    by_key = {}
    for info in infos:
        short = str(int(info.id[:2])) + info.id[2:]
        by_key.update({info.id: info, short: info, info.name: info})
    unknown = [i for i in ids if i not in by_key]
    if unknown:
        raise KeyError(
            f"unknown notebook id(s): {', '.join(unknown)} (known: {', '.join(i.id for i in infos)})"
        )
    return [by_key[i] for i in ids]


def _describe_error(exc: BaseException) -> tuple[str, str]:
    """One line (cell, first source line, exception) and the traceback text."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        first = next((ln for ln in exc.source.splitlines() if ln.strip()), "")
        line = f"cell {exc.cell_index} (`{first.strip()[:80]}`): {exc.ename}: {exc.evalue}"
        tb = "\n".join(exc.traceback)
        return line, re.sub(r"\x1b\[[0-9;]*m", "", tb)
    return f"{type(exc).__name__}: {exc}", ""


POLL_SLICE_S = 0.1  # longest wait for a kernel reply that has already arrived (see below)


def _kernel_manager_class(env: dict[str, str] | None = None):
    """``AsyncKernelManager`` that starts its kernel with ``env`` (default: ``kernel_env()``) and
    whose clients poll the shell socket in slices of ``POLL_SLICE_S``.

    With ipywidgets' ``Output`` widget, nbclient sometimes misses the wake-up for a cell's
    ``execute_reply`` (the kernel is idle, the reply is queued) and only sees it when the cell's
    whole timeout has run out: the cell then "takes" the notebook's remaining budget and the next
    cell times out. Seen in CI under CPU load; reproduced here in 3 of 4 runs of 00_tour beside one
    busy process (jupyter/nbclient#312 describes the same symptom). A ready socket is found by a
    fresh poll, so polling in short slices bounds the delay by ``POLL_SLICE_S``.
    """
    from queue import Empty

    from jupyter_client import AsyncKernelClient, AsyncKernelManager
    from jupyter_client.channels import AsyncZMQSocketChannel
    from traitlets import Type, default

    class ShellChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None) -> dict:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = POLL_SLICE_S if deadline is None else deadline - time.monotonic()
                if await self.socket.poll(int(1000 * max(min(left, POLL_SLICE_S), 0.001))):
                    return await self._recv()
                if deadline is not None and time.monotonic() >= deadline:
                    raise Empty

    class Client(AsyncKernelClient):
        shell_channel_class = Type(ShellChannel)

    kernel_environment = kernel_env() if env is None else dict(env)

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            _MANAGERS.add(self)

        async def start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", {}), **kernel_environment}
            await super().start_kernel(**kw)

        @default("client_factory")
        def _client_factory_default(self):
            return Client

    return Manager


_MANAGERS: weakref.WeakSet = weakref.WeakSet()  # the kernel managers this process created


def _kill_kernels() -> int:
    """SIGKILL every live kernel this process started; return how many. Each kernel runs in a
    session of its own (jupyter_client starts it so), so a Ctrl-C in the terminal never reaches
    it, and a kernel busy in torch would not answer a polite shutdown for as long as its cell runs."""
    killed = 0
    for km in list(_MANAGERS):
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            killed += 1
    return killed


def run_notebook(
    info: NotebookInfo,
    out_dir: Path,
    profile: str = "ci",
    timeout: float = 600.0,
    params: dict | None = None,
    progress: bool = True,
) -> Result:
    """Execute one notebook with papermill at ``profile``; never raises for the notebook's own errors.

    ``timeout`` bounds the whole notebook (seconds): each cell may use what is left of it.
    Ctrl-C ends the notebook with status ``"interrupted"`` (the caller decides whether to stop):
    the kernel is killed at once, whatever its cell is doing, and nbclient sees it gone within a
    second; a second Ctrl-C, or one before the kernel runs, raises ``KeyboardInterrupt`` here.
    The kernel starts with ``rlnb.device.kernel_env()`` (one torch thread; OpenMP threads that
    sleep when idle), so a notebook keeps its speed beside other work.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    if info.error:
        return Result(info.name, "failed", 0.0, error=info.error)
    if not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f"{info.name}.ipynb"
    metrics_file = out_dir / f"{info.name}.metrics.jsonl"
    metrics_file.unlink(missing_ok=True)
    parameters = {"PROFILE": profile, **(params or {})}
    start = time.perf_counter()
    deadline = start + timeout
    status, error, tb = "ok", "", ""
    # no progress bars in a static report: a bar there shows only its first frame ("0%")
    quiet = {PROGRESS_ENV: "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # rlnb's and transformers'
    env = kernel_env({**os.environ, METRICS_ENV: str(metrics_file.resolve()), **quiet})
    interrupted = []

    def on_sigint(signum, frame):
        if interrupted or not _kill_kernels():
            raise KeyboardInterrupt
        interrupted.append(time.perf_counter())

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        pm.execute_notebook(
            str(info.path),
            str(out_nb),
            parameters=parameters,
            cwd=str(info.path.parent),
            progress_bar=progress and {"desc": info.name, "leave": False, "unit": "cell"},
            kernel_name="python3",
            language="python",
            timeout_func=lambda cell: max(deadline - time.perf_counter(), 0.01),
            kernel_manager_class=_kernel_manager_class(env),
        )
    except CellTimeoutError:
        status = "timeout"
        error = f"timed out after {time.perf_counter() - start:.1f} s (limit {timeout:g} s)"
    except KeyboardInterrupt:
        status, error = (
            "interrupted",
            f"interrupted (Ctrl-C) after {time.perf_counter() - start:.1f} s",
        )
    except Exception as exc:  # the notebook's own failure: report it, go on with the others
        status = "failed"
        error, tb = _describe_error(exc)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if interrupted:  # the kernel was killed on Ctrl-C: whatever nbclient made of that
        status = "interrupted"
        error, tb = f"interrupted (Ctrl-C) after {interrupted[0] - start:.1f} s", ""
    result = Result(
        info.name,
        status,
        round(time.perf_counter() - start, 2),
        read_records(metrics_file),
        error,
        tb,
    )
    if out_nb.exists():
        result.ipynb = out_nb.name
        result.html = _render_html(out_nb)
    return result


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_STATIC_STYLE = (
    "<style>.rlnb-widget{display:flex;flex-direction:column;gap:4px;margin:4px 0}"
    ".rlnb-widget.row{flex-direction:row;flex-wrap:wrap;align-items:center;gap:12px}"
    ".rlnb-widget-control{font-family:sans-serif;font-size:90%;color:#444}</style>"
)


def _output_html(output: dict, states: dict) -> str:
    """One stored output (nbformat's output dict) as HTML, the way a notebook page shows it."""
    esc = html.escape
    kind = output.get("output_type")
    if kind == "stream":
        return f"<pre>{esc(''.join(output.get('text', '')))}</pre>"
    if kind == "error":
        return f"<pre>{esc(output.get('ename', ''))}: {esc(output.get('evalue', ''))}</pre>"
    data = output.get("data", {})
    if WIDGET_VIEW in data:
        return static_widget_html(data[WIDGET_VIEW]["model_id"], states)
    if "image/png" in data:
        return f'<img src="data:image/png;base64,{data["image/png"]}">'
    for mime in ("image/svg+xml", "text/html"):
        if mime in data:
            return "".join(data[mime])
    return f"<pre>{esc(''.join(data.get('text/plain', '')))}</pre>"


def static_widget_html(model_id: str, states: dict) -> str:
    """A widget's static rendering from its saved state (``nb.metadata.widgets``): boxes as rows and
    columns of their children, an ``Output`` as what its callback displayed when the notebook ran,
    HTML and labels as their text, progress bars as ``<progress>``, controls as
    "description: value". Needs no script, so the report reads offline."""
    esc = html.escape
    model = states.get(model_id)
    if model is None:
        return ""
    name, state = model["model_name"], model["state"]

    def child(ref: str) -> str:
        return static_widget_html(ref.removeprefix("IPY_MODEL_"), states)

    if "children" in state:  # VBox, HBox, Box, GridBox, Tab, Accordion
        row = " row" if name == "HBoxModel" else ""
        inner = "".join(child(c) for c in state["children"])
        return f'<div class="rlnb-widget{row}">{inner}</div>'
    if name == "OutputModel":
        inner = "".join(_output_html(o, states) for o in state.get("outputs", []))
        return f'<div class="rlnb-widget">{inner}</div>'
    label = esc(state.get("description") or "")
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{label} {state.get('value', '')}</span>"
    if name == "LabelModel":
        return f"<span>{label} {esc(str(state.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        return (
            f'<progress value="{state.get("value", 0)}" max="{state.get("max", 100)}"></progress>'
        )
    if name == "ButtonModel":
        return f"<button disabled>{label}</button>"
    if "_options_labels" in state:  # selection sliders, dropdowns, toggle buttons
        index = state.get("index")
        picked = index if isinstance(index, (list, tuple)) else [index]
        labels = state["_options_labels"]
        value = ", ".join(labels[i] for i in picked if isinstance(i, int) and i < len(labels))
    elif "value" in state:
        value = state["value"]
        value = " – ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    else:
        return ""
    text = f"{label}: {esc(value)}" if label else esc(value)
    return f'<span class="rlnb-widget-control">{text}</span>'


def with_static_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of an executed notebook whose widget outputs are their static renderings
    (``static_widget_html``) and which no longer carries the widget state: an HTML page made from
    it shows each widget as it was drawn at execution, offline, instead of a blank area waiting
    for the widget manager's script from a CDN."""
    nb = copy.deepcopy(nb)
    states = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop(WIDGET_VIEW, None)
            rendered = static_widget_html(view["model_id"], states) if view else ""
            if rendered:
                output["data"] = {"text/html": _STATIC_STYLE + rendered}
    return nb


def _render_html(nb_path: Path) -> str:
    """Render an executed notebook to a self-contained HTML page (images embedded, widgets as
    their static renderings)."""
    from nbconvert import HTMLExporter

    try:
        nb = with_static_widgets(nbformat.read(nb_path, as_version=4))
        body, _ = HTMLExporter().from_notebook_node(nb)
    except Exception:  # a broken notebook should still leave its .ipynb; the report says no HTML
        return ""
    out = nb_path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out.name


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""
    except Exception:
        return ""


def environment(device: str = "auto") -> dict:
    """Versions, device and commit recorded with every run."""
    import torch
    import transformers

    from rlnb import __version__
    from rlnb.device import pick_device

    try:
        resolved = str(pick_device(device))
    except ValueError as exc:
        resolved = f"unavailable ({exc})"
    return {
        "rlnb": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": resolved,
        "git_commit": _git_commit(),
    }


def default_out_dir(root: Path = Path("runs")) -> Path:
    """``runs/<timestamp>``, with a suffix if that already exists (never reuse a directory)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out, k = root / stamp, 1
    while out.exists():
        out, k = root / f"{stamp}-{k}", k + 1
    return out


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _split_exercises(metrics: dict) -> tuple[dict, dict]:
    """The claims' metrics, and the exercises' statuses (``{"gae": "not attempted"}``)."""
    claims = {k: v for k, v in metrics.items() if not k.startswith(EXERCISE_METRIC)}
    exercises = {
        k.removeprefix(EXERCISE_METRIC): v
        for k, v in metrics.items()
        if k.startswith(EXERCISE_METRIC)
    }
    return claims, exercises


def write_report(out_dir: Path, results: list[Result], meta: dict) -> None:
    """Write ``metrics.json``, ``summary.md`` and ``index.html`` for the results so far."""
    out_dir = Path(out_dir)
    data = {**meta, "notebooks": {r.name: asdict(r) for r in results}}
    (out_dir / "metrics.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")

    head = f"profile `{meta['profile']}` · device `{meta['device']}` · torch {meta['torch']} · commit `{meta['git_commit'][:10]}`"
    rows = [
        "| notebook | status | seconds | metrics | exercises | error |",
        "|---|---|---:|---|---|---|",
    ]
    for r in results:
        link = f"[{r.name}]({r.html or r.ipynb})" if (r.html or r.ipynb) else r.name
        metrics, exercises = _split_exercises(r.metrics)
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        exercises = ", ".join(f"{k}: {v}" for k, v in exercises.items())
        rows.append(
            f"| {link} | {r.status} | {r.seconds:.1f} | {metrics} | {exercises} "
            f"| {r.error.replace('|', '/')} |"
        )
    (out_dir / "summary.md").write_text(
        f"# rlnb run {meta['started']}\n\n{head}\n\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )

    esc = html.escape
    trs = []
    for r in results:
        link = (
            f'<a href="{esc(r.html or r.ipynb)}">{esc(r.name)}</a>'
            if (r.html or r.ipynb)
            else esc(r.name)
        )
        metrics, exercises = _split_exercises(r.metrics)
        metrics = "<br>".join(f"{esc(k)} = {esc(_fmt(v))}" for k, v in metrics.items())
        exercises = "<br>".join(f"{esc(k)}: {esc(v)}" for k, v in exercises.items())
        trs.append(
            f'<tr class="{esc(r.status)}"><td>{link}</td><td>{esc(r.status)}</td>'
            f"<td>{r.seconds:.1f}</td><td>{metrics}</td><td>{exercises}</td>"
            f"<td><pre>{esc(r.error)}</pre></td></tr>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>rlnb run {esc(meta["started"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}tr.ok td:nth-child(2){{color:green}}
tr.failed td:nth-child(2),tr.timeout td:nth-child(2),tr.interrupted td:nth-child(2){{color:#b00}}
pre{{margin:0;white-space:pre-wrap}}</style></head><body>
<h1>rlnb run {esc(meta["started"])}</h1><p>{esc(head.replace("`", ""))}</p>
<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>metrics</th><th>exercises</th><th>error</th></tr>
{"".join(trs)}</table></body></html>
"""
    (out_dir / "index.html").write_text(page, encoding="utf-8")


def run_notebooks(
    infos: list[NotebookInfo],
    out_dir: Path,
    profile: str = "ci",
    timeout: float = 600.0,
    params: dict | None = None,
    echo=print,
) -> list[Result]:
    """Execute ``infos`` in order into ``out_dir`` (which must not exist or be empty).

    Returns the results; on Ctrl-C, writes the report of what finished and raises
    ``KeyboardInterrupt``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"out: {out_dir} already exists and is not empty; choose a new directory"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "profile": profile,
        "params": params or {},
        **environment((params or {}).get("DEVICE", "auto")),
    }
    results: list[Result] = []
    write_report(out_dir, results, meta)
    for k, info in enumerate(infos, 1):
        echo(f"[{k}/{len(infos)}] {info.name} ...")
        result = run_notebook(info, out_dir, profile, timeout, params)
        results.append(result)
        write_report(out_dir, results, meta)
        if result.status == "interrupted":
            raise KeyboardInterrupt
        line = f"[{k}/{len(infos)}] {info.name}: {result.status} in {result.seconds:.1f} s"
        budget = BUDGET_S.get(profile)
        if budget and result.seconds > budget:
            line += f" (over the {budget:g} s {profile} budget)"
        if result.error:
            line += f" — {result.error}"
        echo(line)
    return results
