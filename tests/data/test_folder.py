"""One indexer for every class-folder tree: media descriptions, skipped folders, and files that cannot be read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from stoker.data.file_cache import per_file_cached
from stoker.data.manifest import content_hashes
from stoker.data.media import AUDIO, IMAGE, Media
from stoker.data.sources.folder_tree import class_names_of, find_bad_files, index_folder, printable, read_path_list
from tests.conftest import encode_image, natural_image

needs_posix = pytest.mark.skipif(sys.platform == "win32", reason="symlinks and permissions are POSIX here")


def touch(root: Path, *relatives: str, data: bytes = b"x") -> None:
    for rel in relatives:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def jpeg(seed: int = 0) -> bytes:
    return encode_image(natural_image(np.random.default_rng(seed), 16, 16))


def test_audio_skips_underscore_class_folders_and_lists_other_files(tmp_path: Path) -> None:
    touch(tmp_path, "yes/a.wav", "yes/b.FLAC", "no/c.wav", "_background_noise_/noise.wav")
    (tmp_path / "yes" / "README.txt").write_text("notes")
    index = index_folder(tmp_path, media=AUDIO)
    assert index.class_names == ["no", "yes"]
    assert index.files == {"all": [("no/c.wav", 0), ("yes/a.wav", 1), ("yes/b.FLAC", 1)]}
    assert index.ignored == ["yes/README.txt"]
    with pytest.raises(FileNotFoundError, match="audio folder root .*nowhere.* does not exist"):
        index_folder(tmp_path / "nowhere", media=AUDIO)
    with pytest.raises(ValueError, match="is not in class_names"):
        index_folder(tmp_path, ["yes"], media=AUDIO)


def test_hidden_and_tool_folders_and_appledouble_files_are_skipped_and_counted(tmp_path: Path) -> None:
    # .ipynb_checkpoints inside a class used to become samples of that class; ._x.jpg files (macOS
    # metadata with an image extension) used to count as corrupt images and trip max_bad_fraction.
    touch(tmp_path, "cat/a.jpg", "cat/.ipynb_checkpoints/a-checkpoint.jpg", "cat/._a.jpg", "dog/b.jpg",
          "dog/sub/.git/c.jpg", "__MACOSX/cat/._a.jpg", ".hidden_class/d.jpg", "dog/.DS_Store")
    index = index_folder(tmp_path)
    assert index.class_names == ["cat", "dog"]
    assert index.files == {"all": [("cat/a.jpg", 0), ("dog/b.jpg", 1)]}
    assert index.skipped == sorted(["cat/.ipynb_checkpoints", "cat/._a.jpg", "dog/sub/.git", "dog/.DS_Store",
                                    "__MACOSX", ".hidden_class"])
    assert not IMAGE.is_sample("._a.jpg") and IMAGE.is_sample("A.JPG") and not IMAGE.is_sample("notes.txt")


def test_a_class_folder_only_in_validation_is_named(tmp_path: Path) -> None:
    touch(tmp_path, "train/cat/a.jpg", "val/cat/b.jpg", "val/bird/c.jpg")
    with pytest.warns(UserWarning, match=r"\{'bird': \['val'\]\}.*have no train/ folder"):
        names = class_names_of(tmp_path)
    assert names == ["bird", "cat"]


def test_find_bad_files_caches_results_by_size_and_mtime(tmp_path: Path) -> None:
    touch(tmp_path, "good.jpg", data=jpeg())
    touch(tmp_path, "bad.jpg", data=b"not an image")
    calls: list[Path] = []

    def check(path: Path) -> str | None:
        calls.append(path)
        return IMAGE.check(path)

    counting = Media("image", IMAGE.extensions, check, IMAGE.check_bytes)
    cache = tmp_path / "cache.json"
    bad = find_bad_files(tmp_path, ["good.jpg", "bad.jpg"], counting, num_workers=2, cache_path=cache)
    assert list(bad) == ["bad.jpg"] and cache.is_file() and len(calls) == 2
    assert find_bad_files(tmp_path, ["good.jpg", "bad.jpg"], counting, cache_path=cache) == bad
    assert len(calls) == 2, "unchanged files come from the cache"


@needs_posix
def test_dangling_symlinks_loops_and_unreadable_files_are_bad_not_crashes(tmp_path: Path, monkeypatch) -> None:
    touch(tmp_path, "cat/good.jpg", data=jpeg())
    os.symlink(tmp_path / "cat" / "gone.jpg", tmp_path / "cat" / "dangling.jpg")
    os.symlink(tmp_path / "cat" / "loop_b.jpg", tmp_path / "cat" / "loop_a.jpg")
    os.symlink(tmp_path / "cat" / "loop_a.jpg", tmp_path / "cat" / "loop_b.jpg")
    touch(tmp_path, "cat/locked.jpg", data=jpeg(1))
    locked = tmp_path / "cat" / "locked.jpg"
    real_open = open

    def deny(file, *args, **kwargs):  # root ignores file modes, so permission is refused here instead
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    monkeypatch.setattr(Path, "read_bytes", lambda self: deny(self, "rb").read())
    index = index_folder(tmp_path)
    bad = find_bad_files(tmp_path, index.relpaths)
    assert bad["cat/dangling.jpg"].startswith("unreadable file (No such file")
    assert "Too many levels of symbolic links" in bad["cat/loop_a.jpg"]
    assert bad["cat/locked.jpg"] == "unreadable file (Permission denied)"
    hashes, unreadable = content_hashes(tmp_path, index.relpaths)
    assert set(hashes) == {"cat/good.jpg"} and set(unreadable) == set(bad), "hashing reports, never raises"


def test_a_failing_compute_is_reported_and_not_cached(tmp_path: Path) -> None:
    touch(tmp_path, "a.bin")
    state = {"fail": True}

    def compute(path: Path) -> int:
        if state["fail"]:
            raise PermissionError(13, "Permission denied")
        return 1

    cache = tmp_path / "cache.json"
    results, errors = per_file_cached(tmp_path, ["a.bin"], compute, cache_path=cache)
    assert results == {} and isinstance(errors["a.bin"], PermissionError)
    state["fail"] = False
    assert per_file_cached(tmp_path, ["a.bin"], compute, cache_path=cache)[0] == {"a.bin": 1}


@needs_posix
def test_file_names_that_are_not_utf8_are_indexed_checked_and_round_trip(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not valid UTF-8, kept by Python as a surrogate
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / name).write_bytes(jpeg())
    index = index_folder(tmp_path)
    rel = index.files["all"][0][0]
    assert rel == f"cat/{name}" and find_bad_files(tmp_path, [rel]) == {}
    assert printable(rel) == "cat/caf\\xe9.jpg"
    listing = tmp_path / "q.txt"
    listing.write_bytes(b"cat/caf\xe9.jpg\n")
    assert read_path_list(listing) == {rel}


def test_long_work_in_a_log_prints_periodic_lines_with_rate_and_time_left() -> None:
    import io

    from stoker.data.progress import LOG_EVERY_S, Progress

    clock = [0.0]
    out = io.StringIO()
    progress = Progress("hashing image files of x", "a manifest carries them", enabled=True, stream=out,
                        terminal=False, clock=lambda: clock[0])
    total = 100_000
    for done in range(0, total + 1, 1_000):  # 4,000 files/s for 25 s
        clock[0] = done / 4_000
        progress(max(done, 1), total)
    lines = out.getvalue().splitlines()
    assert lines[0] == "stoker: hashing image files of x: 100,000 files, once (the results are cached); a manifest " \
                       "carries them"
    periodic = lines[1:]
    assert len(periodic) == 2 + int((25 - 2) // LOG_EVERY_S)  # when announced (2 s in), every 10 s, the final count
    assert periodic[0].startswith("stoker: hashing image files of x: 8,000/100,000 files (8%), 4,000 files/s, 23s left")
    assert periodic[-1].startswith("stoker: hashing image files of x: 100,000/100,000 files (100%)")


def test_short_work_and_other_ranks_stay_quiet() -> None:
    import io

    from stoker.data.progress import Progress

    clock = [0.0]
    out = io.StringIO()
    quick = Progress("hashing", enabled=True, stream=out, terminal=False, clock=lambda: clock[0])
    for done in range(1, 501):  # done within a second
        clock[0] = done / 1_000
        quick(done, 500)
    other_rank = Progress("hashing", enabled=False, stream=out, terminal=False, clock=lambda: 100.0)
    other_rank(1, 10_000)
    assert out.getvalue() == ""


def test_on_a_terminal_the_same_work_shows_a_bar() -> None:
    import io

    from stoker.data.progress import Progress

    clock = [0.0]
    out = io.StringIO()
    progress = Progress("decode-checking", "verify='none' skips it", enabled=True, stream=out, terminal=True,
                        clock=lambda: clock[0])
    for done in range(1, 11):
        clock[0] = done
        progress(done, 10)
    text = out.getvalue()
    assert "decode-checking: 10 files, once" in text and "10/10" in text and "file/s" in text
