"""A real JupyterLab and a real Chromium for the browser tests (pytest marker ``browser``).

One JupyterLab server for the whole session, on a free loopback port with a random token, serving
a temporary root with copies of the notebooks whose parameters cell is switched to
``PROFILE = "ci"``. Chromium is Debian's (``/usr/bin/chromium``), driven headless by Playwright;
no browser is downloaded. Without Chromium the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from rlnb.device import kernel_env

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RLNB_CHROMIUM", "/usr/bin/chromium")
ENABLE = (
    "install Debian's chromium (apt-get install chromium chromium-driver) to run the browser tests"
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


def _require_chromium():
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Chromium not found at {CHROMIUM} under CI=true: {ENABLE}")
    pytest.skip(ENABLE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ci_copy(src: Path, dst: Path) -> None:
    """Copy a notebook, setting PROFILE = "ci" in its parameters cell."""
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r'^PROFILE = "\w+"', 'PROFILE = "ci"', cell.source, flags=re.M)
    nbformat.write(nb, dst)


class Lab:
    def __init__(self, url: str, token: str, root: Path, proc: subprocess.Popen):
        self.url, self.token, self.root, self.proc = url, token, root, proc

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return json.loads(body) if body else None


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    _require_chromium()
    root = tmp_path_factory.mktemp("lab")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        _ci_copy(nb, root / nb.name)
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    notebook_settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)  # render every cell, so the tests can see every prompt
    (notebook_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = kernel_env(  # the kernels get what `make lab`'s kernelspec gives them
        dict(
            os.environ,
            JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
            RLNB_THREADS="1",
        )
    )
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    server = Lab(f"http://127.0.0.1:{port}", token, root, proc)
    deadline = time.monotonic() + 90
    while True:  # poll the server's own status endpoint until it answers
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}; log: {root / 'jupyterlab.log'}")
        try:
            server.api("/api/status")
            break
        except OSError:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(
                    f"JupyterLab did not answer within 90 s; log: {root / 'jupyterlab.log'}"
                )
            time.sleep(0.25)
    try:
        yield server
    finally:
        try:
            for kernel in server.api("/api/kernels") or []:
                server.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="session")
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield b
        b.close()
