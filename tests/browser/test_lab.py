"""The series in a real JupyterLab, driven by a real browser: run every cell through the UI, check
outputs and widgets, move a slider and see the widget redraw. Waits are on page state (Galata's
habit), never fixed sleeps."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from rlnb import runner

NOTEBOOKS = [
    i.name for i in runner.discover(runner.notebooks_dir()) if "rlnb.widgets." in i.path.read_text()
]
RUN_TIMEOUT_MS = 120_000
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
IDLE = f'{PANEL} .jp-Notebook-ExecutionIndicator[data-status="idle"]'
STDERR = "[data-mime-type='application/vnd.jupyter.stderr']"
TRACEBACK = "Traceback (most recent call last)"


def run_all_cells(page):
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('.lm-Menu-itemLabel:text-is("Run All Cells")')


def wait_until_done(page, n_code_cells: int):
    """Every code cell has an execution count (no "[*]" or empty prompt) and the kernel is idle."""
    page.wait_for_function(
        """n => {
            const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
            return prompts.length === n && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        arg=n_code_cells,
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)


def widget_image(page, slider):
    """The src of the first image in the widget box that holds ``slider`` ("" if none)."""
    return slider.evaluate(
        """el => {
            const box = el.closest('.widget-vbox');
            const img = box && box.querySelector('.jp-OutputArea-output img');
            return img ? img.src : (box ? box.innerText : '');
        }"""
    )


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    yield pg
    ctx.close()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_widgets_respond(name, lab, page, tmp_path):
    path = lab.root / f"{name}.ipynb"
    n_code = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    # a fresh workspace per notebook, so no earlier tab is restored
    page.goto(f"{lab.url}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={lab.token}")
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=120_000)  # the kernel is up
    run_all_cells(page)
    try:
        wait_until_done(page, n_code)
    except Exception as exc:
        shot = tmp_path / f"{name}-timeout.png"
        page.screenshot(path=str(shot))
        status = page.inner_text("#jp-main-statusbar")
        pytest.fail(
            f"{name}: Run All did not finish ({type(exc).__name__}); status bar: {status!r}; screenshot: {shot}"
        )

    text = page.inner_text(PANEL)
    assert "Error displaying widget" not in text, f"{name}: a widget failed to render in JupyterLab"
    panel_errors = [
        t for t in page.locator(f"{PANEL} {STDERR}").all_inner_texts() if TRACEBACK in t
    ]
    assert not panel_errors, f"{name}: a cell shows an error output:\n{panel_errors[0][:2000]}"

    sliders = page.locator(f"{PANEL} .widget-slider .noUi-handle")
    assert sliders.count() >= 1, f"{name}: no widget slider rendered"
    slider = sliders.first
    slider.scroll_into_view_if_needed()
    before = widget_image(page, slider)
    assert before, f"{name}: the widget shows no output before the slider moves"
    slider.focus()
    page.keyboard.press("End")  # the slider's maximum: far enough that the plot must change
    page.wait_for_function(  # the plot changed, or the callback failed
        """([el, before, stderr]) => {
            const box = el.closest('.widget-vbox');
            if (box && box.querySelector(stderr)) return true;
            const img = box && box.querySelector('.jp-OutputArea-output img');
            const now = img ? img.src : (box ? box.innerText : '');
            return now && now !== before;
        }""",
        arg=[slider.element_handle(), before, STDERR],
        timeout=60_000,
    )
    widget_errors = slider.evaluate(
        "(el, s) => [...el.closest('.widget-vbox').querySelectorAll(s)].map(e => e.innerText)",
        STDERR,
    )
    assert not widget_errors, (
        f"{name}: the widget's callback failed after the slider moved:\n{widget_errors[0][:2000]}"
    )
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert not page.console_errors, f"{name}: browser console errors: {page.console_errors[:5]}"
    for session in lab.api("/api/sessions"):  # free the CPU for the next notebook
        lab.api(f"/api/sessions/{session['id']}", method="DELETE")


def test_report_pages_images_and_widgets_load_offline(lab, browser, tmp_path):
    """The report of `rlnb run` read with no network: pages, images and each widget's static
    rendering (what its callback drew at execution) all show."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "rlnb", "--notebooks", str(lab.root), "run", "00", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    ctx = browser.new_context(offline=True)
    requested = []  # every request that is not a local file: none may be needed
    ctx.on("request", lambda r: r.url.startswith("file:") or requested.append(r.url))
    page = ctx.new_page()
    page.goto((out / "index.html").as_uri())
    links = page.locator("table a")
    names = json.loads((out / "metrics.json").read_text())["notebooks"]
    assert links.count() == len(names) >= 1
    for href in links.evaluate_all("els => els.map(e => e.href)"):
        page.goto(href)
        page.wait_for_load_state("load")
        broken = page.evaluate(
            "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        total = page.evaluate("document.images.length")
        assert total >= 1 and broken == 0, f"{href}: {broken} of {total} images did not load"
        executed = nbformat.read(out / href.rsplit("/", 1)[-1].replace(".html", ".ipynb"), 4)
        n_views = sum(
            runner.WIDGET_VIEW in o.get("data", {})
            for c in executed.cells
            for o in c.get("outputs", [])
        )
        shown = page.evaluate(
            """() => [...document.querySelectorAll('.rlnb-widget')]
                .filter(w => !w.parentElement.closest('.rlnb-widget'))
                .map(w => ({h: w.getBoundingClientRect().height,
                            imgs: [...w.querySelectorAll('img')].filter(i => i.naturalWidth > 0).length}))"""
        )
        assert n_views >= 1 and len(shown) == n_views, (
            f"{href}: {len(shown)} of {n_views} widgets shown"
        )
        assert all(w["h"] > 0 for w in shown), f"{href}: a widget renders as an empty area: {shown}"
        assert any(w["imgs"] for w in shown), f"{href}: no widget shows its plot: {shown}"
        assert "Loading widget" not in page.inner_text("body")
    ctx.close()
    print(f"requests beyond the report's files (offline, so they failed): {requested}")
