"""Kill and resume (SIGKILL mid-epoch, ``ckpt_path=``) of the language-model DataModules: nothing repeated or skipped.

Map-style packed rows, token-budget batches and a stream packed on the fly with loader workers, at 1 and 2
ranks, through the shared harness of tests/datamodules/test_resume.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datamodules.test_resume import check_kill_and_resume
from tests.datamodules.test_text_datamodule import rows, write_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("resume-lm")
    write_csv(base / "corpus" / "train.csv", rows(40))
    for part in range(4):  # a stream reads whole files per worker: one per rank and worker
        write_csv(base / "stream" / f"part{part}.csv", rows(14, offset=100 * part, seed=part))
    write_csv(base / "stream" / "validation.csv", rows(6, offset=1000))
    return base


VARIANTS = [("packed", 2), ("budget", 0), ("stream", 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "workers"), VARIANTS)
def test_one_rank_resumes_exactly(tmp_path: Path, data: Path, variant: str, workers: int) -> None:
    check_kill_and_resume(tmp_path, f"resume_lm:{variant}", data, ranks=1, workers=workers)


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize(("variant", "workers"), VARIANTS)
def test_two_ranks_resume_exactly(tmp_path: Path, data: Path, variant: str, workers: int) -> None:
    check_kill_and_resume(tmp_path, f"resume_lm:{variant}", data, ranks=2, workers=workers)
