"""Progress bars: the one ``tqdm`` every loop of rlnb uses, silent in a headless run.

A notebook executed by ``rlnb run`` (papermill) is read afterwards as a static page, where a
widget progress bar can only show its first frame ("0%"). The runner therefore sets
``RLNB_PROGRESS=0`` in the kernel's environment, and every bar made here is then off; in
JupyterLab, Colab or a terminal the bars show as usual.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

PROGRESS_ENV = "RLNB_PROGRESS"


def progress_bar(iterable=None, *, desc: str, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, desc=desc, **kwargs)``, disabled when ``enabled`` is false or the
    environment has ``RLNB_PROGRESS=0``."""
    headless = os.environ.get(PROGRESS_ENV) == "0"
    return tqdm(iterable, desc=desc, disable=not enabled or headless, **kwargs)
