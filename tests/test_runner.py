"""The runner and the ``rlnb`` command on small synthetic notebooks."""

import json
import subprocess
import sys

import nbformat
import pytest

from rlnb import cli, runner
from rlnb.device import KERNEL_THREADS, kernel_env

TITLE = "# {id} · {title}\n\n**Papers:** A Paper\n\n**Runtime:** ci ≈ 1 s"
PARAMS = 'PROFILE = "default"\nSEED = 0\nDEVICE = "auto"'


def write_nb(path, *sources, title="Synthetic"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(TITLE.format(id=path.name[:2], title=title)),
        nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
        *[nbformat.v4.new_code_cell(s) for s in sources],
    ]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    d = tmp_path_factory.mktemp("notebooks")
    write_nb(
        d / "00_ok.ipynb",
        "import rlnb\nrlnb.record('profile_is_ci', PROFILE == 'ci')\nrlnb.record('seed', SEED)",
        title="Fine",
    )
    write_nb(
        d / "01_fails.ipynb",
        "import rlnb\nrlnb.record('before', 1.5)",
        "x = 2\nassert x < 1, 'x is too big'",
        title="Broken",
    )
    write_nb(d / "02_slow.ipynb", "import time\ntime.sleep(60)", title="Slow")
    return d


def test_discover_reads_titles(series):
    infos = runner.discover(series)
    assert [(i.id, i.name, i.title, i.papers) for i in infos] == [
        ("00", "00_ok", "Fine", "A Paper"),
        ("01", "01_fails", "Broken", "A Paper"),
        ("02", "02_slow", "Slow", "A Paper"),
    ]
    assert infos[0].runtime == "ci ≈ 1 s"
    assert [i.name for i in runner.select(infos, ["1", "00_ok"])] == ["01_fails", "00_ok"]
    with pytest.raises(KeyError, match="99"):
        runner.select(infos, ["99"])


def test_kernel_starts_with_passive_openmp_one_thread_and_no_progress_bars(tmp_path, monkeypatch):
    """torch's OpenMP reads these when torch loads: the kernel must have them from its start. A
    progress bar in a static report can only show its first frame ("0%"): `rlnb run` silences them."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    write_nb(
        tmp_path / "00_env.ipynb",
        "import os, torch, rlnb\n"
        "from rlnb.progress import progress_bar\n"
        "for _ in progress_bar(range(3), desc='steps'):\n    pass\n"
        "rlnb.record('wait_policy', os.environ.get('OMP_WAIT_POLICY', ''))\n"
        "rlnb.record('torch_threads', torch.get_num_threads())",
    )
    [info] = runner.discover(tmp_path)
    result = runner.run_notebook(info, tmp_path / "out", timeout=120, progress=False)
    assert result.status == "ok", result.error
    assert result.metrics == {"wait_policy": "PASSIVE", "torch_threads": KERNEL_THREADS}
    assert "0%" not in (tmp_path / "out" / "00_env.ipynb").read_text(encoding="utf-8")


def test_kernel_env_adds_only_what_is_unset():
    env = kernel_env({"PATH": "/bin", "OMP_NUM_THREADS": "3"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    assert kernel_env({})["OMP_NUM_THREADS"] == str(KERNEL_THREADS)


def test_run_reports_failure_and_keeps_other_outputs(series, tmp_path):
    out = tmp_path / "run"
    infos = runner.select(runner.discover(series), ["00", "01"])
    results = runner.run_notebooks(
        infos, out, profile="ci", timeout=120, params={"SEED": 4}, echo=lambda *_: None
    )
    ok, bad = results
    assert ok.status == "ok" and ok.metrics == {"profile_is_ci": True, "seed": 4}
    assert bad.status == "failed"
    assert (
        "cell" in bad.error and "x = 2" in bad.error and "AssertionError: x is too big" in bad.error
    )
    assert bad.metrics == {"before": 1.5}  # recorded before the failure, still there
    for name in (
        "00_ok.ipynb",
        "00_ok.html",
        "01_fails.ipynb",
        "01_fails.html",
        "index.html",
        "summary.md",
    ):
        assert (out / name).exists(), name
    data = json.loads((out / "metrics.json").read_text())
    assert data["profile"] == "ci" and data["notebooks"]["00_ok"]["metrics"]["seed"] == 4
    assert {"torch", "rlnb", "device", "git_commit"} <= set(data)
    assert "01_fails" in (out / "summary.md").read_text()
    with pytest.raises(FileExistsError):
        runner.run_notebooks(infos, out)  # never overwrite silently


def test_timeout_is_reported_with_elapsed_time(series, tmp_path):
    info = runner.select(runner.discover(series), ["02"])[0]
    res = runner.run_notebook(info, tmp_path, timeout=8, progress=False)
    assert res.status == "timeout"
    assert "timed out after" in res.error and res.seconds < 40


def test_interrupt_writes_report_of_what_finished(series, tmp_path, monkeypatch):
    infos = runner.discover(series)
    fake = iter(
        [runner.Result("00_ok", "ok", 1.0, {"m": 1}), runner.Result("01_fails", "interrupted", 0.5)]
    )
    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: next(fake))
    with pytest.raises(KeyboardInterrupt):
        runner.run_notebooks(infos, tmp_path / "r", echo=lambda *_: None)
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert list(data["notebooks"]) == ["00_ok", "01_fails"]
    assert data["notebooks"]["01_fails"]["status"] == "interrupted"


def rlnb_cmd(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rlnb", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_unknown_id_exits_2_with_one_line(series, tmp_path):
    proc = rlnb_cmd("--notebooks", str(series), "run", "99", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "99" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_cli_failing_notebook_exits_1_naming_it(series, tmp_path):
    proc = rlnb_cmd("--notebooks", str(series), "run", "0", "1", "--out", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert "01_fails failed" in proc.stderr and "AssertionError: x is too big" in proc.stderr
    assert (tmp_path / "r" / "00_ok.html").exists()
    again = rlnb_cmd("--notebooks", str(series), "run", "0", "--out", str(tmp_path / "r"))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_cli_list(series):
    proc = rlnb_cmd("--notebooks", str(series), "list")
    assert proc.returncode == 0 and "00  Fine" in proc.stdout and "papers: A Paper" in proc.stdout
    md = rlnb_cmd("--notebooks", str(series), "list", "--markdown").stdout
    assert md.splitlines()[0].startswith("| # |") and "[Broken](notebooks/01_fails.ipynb)" in md


def test_parse_param():
    assert cli._parse_param("SEED=3") == ("SEED", 3)
    assert cli._parse_param("DEVICE=cpu") == ("DEVICE", "cpu")
    assert cli._parse_param("X=[1, 2]") == ("X", [1, 2])
    with pytest.raises(ValueError, match="--param"):
        cli._parse_param("no-equals")


class FakeSocket:
    """A shell socket whose reply is queued after ``misses`` polls that did not see it."""

    def __init__(self, misses):
        self.misses, self.polls = misses, []

    async def poll(self, timeout_ms):
        import asyncio

        self.polls.append(timeout_ms)
        if self.misses is not None and len(self.polls) > self.misses:
            return 1
        await asyncio.sleep(timeout_ms / 1000)
        return 0


def shell_channel(socket):
    client = runner._kernel_manager_class()().client_factory
    channel = object.__new__(client.shell_channel_class.default_value)
    channel.socket = socket

    async def recv():
        return {"msg_type": "execute_reply"}

    channel._recv = recv
    return channel


def run_in_own_loop(coro):
    """``asyncio.run`` in a thread: a session fixture (Playwright's sync API) may hold this one's loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_shell_poll_sees_a_queued_reply_within_one_slice():
    from queue import Empty

    socket = FakeSocket(misses=3)
    msg = run_in_own_loop(shell_channel(socket).get_msg(timeout=30))
    assert msg == {"msg_type": "execute_reply"}
    assert len(socket.polls) == 4 and max(socket.polls) <= 1000 * runner.POLL_SLICE_S

    never = FakeSocket(misses=None)
    with pytest.raises(Empty):
        run_in_own_loop(shell_channel(never).get_msg(timeout=0.35))
    assert 3 <= len(never.polls) <= 6  # slices up to the timeout, then Empty as nbclient expects


CHECKS = "import rlnb\nassert PROFILE == 'ci'\nrlnb.notebook.record('ran', 1)"


def write_contract_nb(path, builds_on):
    """A notebook that satisfies tests/test_notebooks.py's structure rules."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            TITLE.format(id=path.name.split("_")[0], title=path.stem)
            + f"\n\n**Builds on:** {builds_on}"
        ),
        nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("## Checks"),
        nbformat.v4.new_code_cell(CHECKS),
    ]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lettered(tmp_path_factory):
    d = tmp_path_factory.mktemp("lettered")
    for name, builds_on in [
        ("10_later", "01b"),
        ("01b_extends_one", "01"),
        ("02_two", "01"),
        ("01_one", "00"),
        ("00_start", "—"),
    ]:
        write_contract_nb(d / f"{name}.ipynb", builds_on)
    return d


def test_lettered_notebook_sorts_after_its_number_and_selects_by_id(lettered):
    infos = runner.discover(lettered)
    assert [i.id for i in infos] == ["00", "01", "01b", "02", "10"]
    assert infos[2].name == "01b_extends_one" and infos[2].title == "01b_extends_one"
    assert infos[2].builds_on == "01"
    for key in ("01b", "1b", "01b_extends_one"):
        assert [i.name for i in runner.select(infos, [key])] == ["01b_extends_one"]
    table = cli.markdown_table(infos)
    assert table.splitlines()[0] == (
        "| # | notebook | builds on | papers | exercises | runtime | Colab |"
    )
    assert "| 01b | [01b_extends_one](notebooks/01b_extends_one.ipynb) | 01 |" in table
    assert "| 00 | [00_start](notebooks/00_start.ipynb) | — |" in table


@pytest.mark.parametrize("bad", ["1_one.ipynb", "01-one.ipynb", "01B_one.ipynb", "01bb_x.ipynb"])
def test_misnamed_notebook_makes_discover_raise(tmp_path, bad):
    write_contract_nb(tmp_path / "00_start.ipynb", "—")
    write_contract_nb(tmp_path / bad, "00")
    with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
        runner.discover(tmp_path)
    proc = rlnb_cmd("--notebooks", str(tmp_path), "list")
    assert proc.returncode == 2 and bad in proc.stderr


def test_lettered_notebook_is_listed_and_run_by_id(lettered, tmp_path):
    listed = rlnb_cmd("--notebooks", str(lettered), "list")
    assert listed.returncode == 0
    assert listed.stdout.index("01b  01b_extends_one") > listed.stdout.index("01  01_one")
    proc = rlnb_cmd("--notebooks", str(lettered), "run", "01b", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert data["notebooks"]["01b_extends_one"]["metrics"] == {"ran": 1}


def test_notebook_tests_execute_a_lettered_notebook(lettered):
    """tests/test_notebooks.py collects what discover() finds: the 01b notebook is checked and run."""
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tests / "test_notebooks.py"),
            "-v",
            "-p",
            "no:cacheprovider",
            "-k",
            "01b",
            "--rootdir",
            str(tests.parent),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "RLNB_NOTEBOOKS": str(lettered)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    for test in (
        "test_notebook_structure",
        "test_builds_on_names_earlier_notebooks",
        "test_notebook_runs_at_ci_profile",
    ):
        assert f"{test}[01b_extends_one] PASSED" in proc.stdout, proc.stdout[-3000:]
    assert "01b_extends_one" in proc.stdout.split("notebook budget")[-1]


def test_cli_missing_or_empty_notebooks_directory_exits_2(tmp_path):
    missing = rlnb_cmd("--notebooks", str(tmp_path / "nope"), "list")
    assert (
        missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    )
    empty = rlnb_cmd("--notebooks", str(tmp_path), "run", "--out", str(tmp_path / "r"))
    assert empty.returncode == 2 and "no notebook" in empty.stderr
    assert not (tmp_path / "r").exists()


def test_a_corrupt_notebook_is_named_and_the_others_still_run(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    write_contract_nb(d / "00_start.ipynb", "—")
    (d / "01_broken.ipynb").write_text('{"cells": [', encoding="utf-8")  # cut off mid-write
    listed = rlnb_cmd("--notebooks", str(d), "list")
    assert listed.returncode == 1 and "00  00_start" in listed.stdout
    assert "01_broken.ipynb: cannot read the notebook" in listed.stderr
    assert "Traceback" not in listed.stderr
    ran = rlnb_cmd("--notebooks", str(d), "run", "--out", str(tmp_path / "r"))
    assert ran.returncode == 1 and "01_broken failed: 01_broken.ipynb: cannot read" in ran.stderr
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert data["notebooks"]["00_start"]["status"] == "ok"
    assert data["notebooks"]["01_broken"]["status"] == "failed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_cli_bad_timeout_exits_2_with_one_line(series, tmp_path, args, message):
    proc = rlnb_cmd("--notebooks", str(series), "run", "0", "--out", str(tmp_path / "r"), *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and not (tmp_path / "r").exists()


def test_cli_out_pointing_at_a_file_exits_2(series, tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    proc = rlnb_cmd("--notebooks", str(series), "run", "0", "--out", str(target))
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert target.read_text() == "keep me"


def test_ctrl_c_in_a_busy_torch_cell_ends_the_run_within_seconds(tmp_path):
    """SIGINT to ``rlnb run`` (what Ctrl-C sends; the kernel sits in a session of its own) while a
    cell spins in torch: exit 130 within seconds, the report written, no traceback on the
    terminal, and no kernel left behind."""
    import signal
    import time

    import psutil

    d = tmp_path / "nbs"
    d.mkdir()
    write_contract_nb(d / "00_start.ipynb", "—")
    marker = tmp_path / "kernel.pid"
    busy = f"import os, torch\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\nwhile True:\n    torch.randn(300, 300) @ torch.randn(300, 300)"
    write_nb(d / "01_busy.ipynb", busy)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlnb", "--notebooks", str(d), "run", "--out", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not (marker.exists() and marker.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the busy cell never started"
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the torch loop
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and time.monotonic() - sent < 15, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err, err[-2000:]
    data = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert data["notebooks"]["00_start"]["status"] == "ok"
    assert data["notebooks"]["01_busy"]["status"] == "interrupted"
    kernel = int(marker.read_text())
    for _ in range(50):  # gone, or a zombie waiting for init to reap it
        if not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == "zombie":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the kernel {kernel} is still running")


def test_widgets_render_statically_from_their_saved_state():
    """The report's HTML shows each widget as it was drawn at execution, with no script."""
    import ipywidgets as W

    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    out = W.Output()
    out.outputs = ({"output_type": "display_data", "data": png, "metadata": {}},)
    slider = W.SelectionSlider(options=["0.5", "1.0", "1.5"], value="1.0", description="T")
    box = W.VBox([W.HTML("<b>pass@k</b>"), W.HBox([slider, W.IntSlider(3, description="k")]), out])
    bar = W.HBox([W.HTML("SFT: 100%"), W.FloatProgress(value=28, max=28)])
    state = W.Widget.get_manager_state(drop_defaults=False)["state"]
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {runner.WIDGET_STATE: {"state": state}}
    views = [
        nbformat.v4.new_output(
            "display_data",
            data={runner.WIDGET_VIEW: {"model_id": w.model_id}, "text/plain": "VBox(...)"},
        )
        for w in (box, bar)
    ]
    missing = nbformat.v4.new_output(
        "display_data", data={runner.WIDGET_VIEW: {"model_id": "gone"}, "text/plain": "HBox()"}
    )
    nb.cells = [nbformat.v4.new_code_cell("explorer()", outputs=[*views, missing])]

    static = runner.with_static_widgets(nb)
    assert "widgets" not in static.metadata and "widgets" in nb.metadata  # a copy
    [box_out, bar_out, missing_out] = static.cells[0].outputs
    page = box_out["data"]["text/html"]
    assert set(box_out["data"]) == {"text/html"}
    for part in (
        '<img src="data:image/png;base64,iVBORw0KGgo=">',
        "<b>pass@k</b>",
        "T: 1.0",
        "k: 3",
    ):
        assert part in page, part
    assert page.index("pass@k") < page.index("T: 1.0") < page.index("<img")  # the box's order
    assert '<progress value="28.0" max="28.0">' in bar_out["data"]["text/html"]
    assert missing_out["data"] == {"text/plain": "HBox()"}  # no state: the text fallback


def test_rlnb_kernel_installs_a_kernelspec_with_the_kernel_environment(tmp_path):
    assert cli.main(["kernel", "--prefix", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/python3/kernel.json").read_text())
    env = kernel_env()
    assert spec["env"]["OMP_WAIT_POLICY"] == env["OMP_WAIT_POLICY"]
    assert spec["env"]["OMP_NUM_THREADS"] == env["OMP_NUM_THREADS"]
    assert spec["argv"][0] == sys.executable


def test_exercises_are_listed_and_their_status_reported(tmp_path):
    """A "Try it" cell left unattempted: `rlnb list` counts it, the run goes on and reports it."""
    d = tmp_path / "notebooks"
    d.mkdir()
    write_nb(
        d / "00_try.ipynb",
        "from rlnb import exercises\n\n\ndef my_rloo(rewards, group_size):\n    return None\n\n\n"
        'exercises.check("rloo", my_rloo)',
        'import rlnb\nrlnb.record("after", 1)',
        title="Try",
    )
    (info,) = runner.discover(d)
    assert info.exercises == ("rloo",)
    assert "[Try](notebooks/00_try.ipynb) | — | A Paper | 1: `rloo` |" in cli.markdown_table([info])
    out = tmp_path / "run"
    (result,) = runner.run_notebooks([info], out, profile="ci", timeout=120, echo=lambda *_: None)
    assert result.status == "ok"
    assert result.metrics == {"exercise rloo": "not attempted", "after": 1}
    summary = (out / "summary.md").read_text()
    assert "| after=1 | rloo: not attempted |" in summary
    assert "rloo: not attempted" in (out / "index.html").read_text()
