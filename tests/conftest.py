"""Shared fixtures: synthetic data made on the fly (no network) and a real multi-process runner."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from PIL import Image

if TYPE_CHECKING:
    from tests.scripts.monitor_harness import VirtualClock

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scan caches and other stoker caches go to a per-session temporary folder."""
    monkeypatch.setenv("STOKER_CACHE", str(tmp_path_factory.getbasetemp() / "stoker-cache"))


@pytest.fixture
def virtual_clock() -> Iterator[VirtualClock]:
    """A clock that moves only by injected costs, read by the monitors during the test (timing tests never sleep).

    Pass it as ``clock=`` to the paced harness (tests/scripts/monitor_harness.py) and sleep on it in test models.
    """
    from tests.scripts.monitor_harness import VirtualClock, virtual_time  # Lightning loads only where needed

    with virtual_time(VirtualClock()) as clock:
        yield clock


def encode_image(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None, **save: Any) -> bytes:
    """Encode a uint8 ``[H, W, 3]`` (or ``[H, W]``) array, optionally converted to a PIL mode."""
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def natural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, photo-like RGB image (gradients plus blobs), so that JPEG sizes are realistic."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.28)
        image[..., channel] = 127 + 60 * np.sin(fx * xx / width * 6.28 + phase) * np.cos(fy * yy / height * 6.28)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, min(height, width) / 3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image[mask] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def write_image_tree(
    root: Path,
    counts: dict[str, int],
    *,
    size: tuple[int, int] = (40, 48),
    fmt: str = "JPEG",
    seed: int = 0,
    split: str | None = None,
) -> list[Path]:
    """Write ``counts[class]`` images per class under ``root[/split]/<class>/``; return the paths."""
    rng = np.random.default_rng(seed)
    base = root / split if split else root
    suffix = {"JPEG": ".jpg", "PNG": ".png"}[fmt]
    paths = []
    for name, count in counts.items():
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = folder / f"{name}_{i:04d}{suffix}"
            path.write_bytes(encode_image(natural_image(rng, *size), fmt))
            paths.append(path)
    return paths


@pytest.fixture
def image_tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``image_tree({"cat": 5, "dog": 7}, split=None, ...)`` returns the root."""

    def make(counts: dict[str, int], **kwargs: Any) -> Path:
        root = kwargs.pop("root", tmp_path / "images")
        write_image_tree(root, counts, **kwargs)
        return root

    return make


def run_script(script: Path, *args: str, timeout: float = 240, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a Python script in a fresh interpreter (a real DDP launch needs its own process tree).

    The script must write its results as JSON to the path given by ``--out``; that JSON is returned.
    """
    out = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"stoker-{os.getpid()}-{script.stem}-{abs(hash(args))}.json"
    if out.exists():
        out.unlink()
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(out)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO,
    )
    if result.returncode != 0 or not out.exists():
        raise AssertionError(
            f"{script.name} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-6000:]}"
        )
    return json.loads(out.read_text())
