"""No configuration hangs: a rank whose data raises, or a rank killed mid-step, ends every rank with an error soon.

Under DDP a rank that stops takes part in no more collectives, and the others would wait in the next gradient
all-reduce. Each case runs a real 2-rank fit (gloo) in its own process tree and requires that the whole job
exits non-zero within a bounded time, with the data error named, and leaves no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, write_image_tree

SCRIPT = REPO / "tests" / "scripts" / "ddp_no_hang.py"
BOUND_S = 120  # measured here: well under 30 s for every case
pytestmark = [pytest.mark.ddp, pytest.mark.slow]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("no-hang") / "images"
    write_image_tree(root, {"a": 16, "b": 16}, size=(16, 16))
    return root


def _leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(marker in part for part in cmdline) and process.pid != os.getpid():
            found.append(process)
    return found


@pytest.mark.parametrize(("mode", "message"), [
    ("raise", "the storage returned an I/O error (injected)"),
    ("raise_in_worker", "the storage returned an I/O error (injected)"),
    ("kill", None),
])
def test_a_failing_rank_ends_the_whole_job_with_an_error(images: Path, tmp_path: Path, mode: str,
                                                         message: str | None) -> None:
    out = tmp_path / "finished.json"
    start = time.monotonic()
    try:
        result = subprocess.run([sys.executable, str(SCRIPT), mode, str(images), "--out", str(out)],
                                capture_output=True, text=True, timeout=BOUND_S, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    except subprocess.TimeoutExpired:
        for process in _leftovers(str(images)):
            process.kill()
        pytest.fail(f"{mode}: the job still ran after {BOUND_S} s (a rank hangs)")
    elapsed = time.monotonic() - start
    assert result.returncode != 0 and not out.exists(), f"{mode}: the fit returned as if nothing happened"
    if message is not None:
        assert message in result.stderr, result.stderr[-4000:]
    deadline = time.monotonic() + 20
    while _leftovers(str(images)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _leftovers(str(images))
    for process in left:
        process.kill()
    assert not left, f"{mode}: processes outlived the job: {[p.pid for p in left]}"
    print(f"{mode}: every rank ended in {elapsed:.1f} s")
