"""ImageDataModule and AudioDataModule read every source form, keep the given splits and the right labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stoker.datamodules import AudioDataModule, ImageDataModule
from tests.data.test_shards import s3_server  # noqa: F401  (the loopback S3 server fixture)
from tests.sources_fixtures import (
    CLASSES,
    SPLIT_COUNTS,
    WRITERS,
    photo_records,
    tone_records,
    write_folder,
    write_hub_parquet,
    write_saved,
    write_shards,
    write_table,
    write_webdataset,
)

KINDS = {"folder": "folder", "table": "table", "hf_saved": "hf", "hf_parquet": "hf", "webdataset": "webdataset"}


@pytest.fixture(scope="module")
def records():
    return photo_records()


@pytest.fixture(scope="module")
def forms(tmp_path_factory, records) -> dict[str, Path]:
    """Every source form of the same records, written once for the module."""
    base = tmp_path_factory.mktemp("forms")
    out = {form: writer(base / form, records) for form, writer in WRITERS.items()}
    out["shards"] = write_shards(base / "shards", records, base)
    return out


def _dm(source, **kwargs) -> ImageDataModule:
    source = source if isinstance(source, list) else str(source)
    return ImageDataModule(source, batch_size=4, num_workers=0, image_size=32, **kwargs)


def _key_stem(key: str) -> str:
    # folder/table keys end in <name>.jpg; hf keys are <split>#<row>; tar keys <tar>#<name>
    return Path(key.rpartition("#")[2]).stem


@pytest.mark.parametrize("form", sorted(WRITERS))
def test_each_source_keeps_its_splits_and_labels(forms, records, form) -> None:
    # WebDataset .cls members hold class indices: their names come from class_names (else "0", "1", ...).
    dm = _dm(forms[form], **({"class_names": list(CLASSES)} if form == "webdataset" else {}))
    assert dm.source_kind == KINDS[form]
    assert dm.class_names == list(CLASSES) and dm.num_classes == 3  # known before setup, for LightningCLI
    dm.setup("fit")
    sizes = {split: n * len(CLASSES) for split, n in SPLIT_COUNTS.items()}
    assert dm.describe()["split_sizes"] == sizes and dm.describe()["source_kind"] == KINDS[form]
    assert any("kept" in note or "splits" in note for note in dm.split_notes)
    by_split = {split: sorted((r.label, r.split) for r in records if r.split == split) for split in sizes}
    for split, pairs in dm.splits.items():
        got = sorted((CLASSES[label], split) for _, label in pairs)
        assert got == by_split[split], (form, split)
    if form not in ("hf_saved", "hf_parquet"):  # hf keys are rows; the others name the record
        label_of = {r.name: r.label for r in records}
        for pairs in dm.splits.values():
            assert all(label_of[_key_stem(key)] == CLASSES[label] for key, label in pairs)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 32, 32)
    assert batch["label"].dtype == torch.int64 and set(batch["label"].tolist()) <= {0, 1, 2}
    seen = [i for b in dm.val_dataloader() for i in b["index"].tolist()]
    assert sorted(seen) == list(range(sizes["val"]))  # every validation sample exactly once


def test_the_same_pixels_come_out_of_every_form(forms) -> None:
    """The evaluation transform of the first validation sample is identical whatever stores it."""
    outputs = {}
    for form in ("folder", "table", "hf_saved", "hf_parquet", "webdataset"):
        dm = _dm(forms[form], **({"class_names": list(CLASSES)} if form == "webdataset" else {}))
        dm.setup("fit")
        batches = list(dm.val_dataloader())
        images = torch.cat([b["image"] for b in batches])
        labels = torch.cat([b["label"] for b in batches])
        order = sorted(range(len(labels)), key=lambda i: (int(labels[i]), images[i].float().sum().item()))
        outputs[form] = images[order]
    reference = outputs.pop("folder")
    for form, images in outputs.items():
        assert torch.equal(images, reference), form


def test_shard_sets_read_through_the_same_module(forms) -> None:
    dm = _dm(forms["shards"])
    assert dm.source_kind == "shards" and dm.num_classes == 3
    dm.setup("fit")
    assert dm.describe()["split_sizes"] == {split: n * 3 for split, n in SPLIT_COUNTS.items()}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)


def test_a_pool_without_splits_is_carved_by_fractions_and_says_so(tmp_path, records) -> None:
    root = write_folder(tmp_path / "flat", records, presplit=False)
    dm = _dm(root, val_fraction=0.2, test_fraction=0.1)
    dm.setup("fit")
    assert sum(dm.split_sizes().values()) == len(records)
    assert any("carved out of the whole pool" in note for note in dm.split_notes)


def test_a_given_validation_split_is_never_merged_and_only_test_is_carved(tmp_path, records) -> None:
    kept = [r for r in records if r.split != "test"]
    table = write_table(tmp_path, kept)
    dm = _dm(table, val_fraction=0.5, test_fraction=0.25)
    dm.setup("fit")
    val_names = sorted(Path(key).stem for key, _ in dm.splits["val"])
    assert val_names == sorted(r.name for r in kept if r.split == "val")  # the given split, untouched
    assert dm.split_sizes()["test"] == 3 * round(SPLIT_COUNTS["train"] * 0.25)  # carved out of train only
    assert all(Path(key).stem.startswith("train_") for key, _ in dm.splits["test"])


def test_table_labels_as_indices_and_absolute_paths(tmp_path, records) -> None:
    table = write_table(tmp_path, records, fmt="parquet", label_as_index=True, absolute=True)
    dm = _dm(table, class_names=list(CLASSES))
    dm.setup("fit")
    assert dm.source_kind == "table" and dm.split_sizes()["train"] == 18


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_table_formats(tmp_path, records, fmt) -> None:
    dm = _dm(write_table(tmp_path, records, fmt=fmt))
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 6}


def test_webdataset_labels_from_json_and_brace_patterns(tmp_path, records) -> None:
    root = write_webdataset(tmp_path / "wds", records, per_tar=6, label="json")
    pattern = str(root / "train-{000000..000002}.tar")
    dm = _dm([pattern, str(root / "val-000000.tar")])
    assert dm.source_kind == "webdataset"
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 0} and dm.class_names == list(CLASSES)


def test_bad_rows_and_files_are_named_counted_and_left_out(tmp_path, records) -> None:
    table = write_table(tmp_path, records)
    lines = table.read_text().splitlines()
    (tmp_path / "files" / f"{records[0].name}.jpg").write_bytes(b"not a jpeg")  # undecodable file
    lines.append("files/missing.jpg,cat,train")  # no such file
    lines.append("files/" + f"{records[1].name}.jpg".replace(records[1].name, records[2].name) + ",,train")
    lines.append(f"files/{records[3].name}.jpg,horse,train".replace(records[3].name, "x"))  # unknown label
    table.write_text("\n".join(lines) + "\n")
    dm = _dm(table, class_names=list(CLASSES), max_bad_fraction=0.2)
    with pytest.warns(UserWarning, match="unusable image file"):
        dm.setup("fit")
    reasons = dm.bad_files
    assert reasons[f"files/{records[0].name}.jpg"].startswith("not a readable image")
    assert reasons["files/missing.jpg"].startswith("unreadable file")
    assert any("missing label" in why for why in reasons.values())
    assert any("not one of the class names" in why for why in reasons.values())
    assert sum(dm.split_sizes().values()) == len(records) - 1  # every good row kept


def test_a_flat_folder_or_a_single_class_is_an_error_that_says_how_to_pass_labels(tmp_path, records) -> None:
    flat = tmp_path / "flat" / "images"
    flat.mkdir(parents=True)
    for r in records[:4]:
        (flat / f"{r.name}.jpg").write_bytes(r.data)
    with pytest.raises(ValueError, match=r"one class folder 'images'.*a table \(csv, tsv, jsonl or parquet\)"):
        _dm(tmp_path / "flat").setup("fit")
    with pytest.raises(ValueError, match=r"image file\(s\) directly in the folder and no class folder"):
        _dm(flat).setup("fit")
    one_class = write_table(tmp_path / "one", [r for r in records if r.label == "cat"])
    with pytest.raises(ValueError, match="single class 'cat'"):
        _dm(one_class).setup("fit")


def test_multi_label_tables_give_multi_hot_targets(tmp_path, records) -> None:
    table = write_table(tmp_path, records, split_column=False)
    lines = table.read_text().splitlines()
    lines = [lines[0]] + [f"{line};bird" if i % 2 else line for i, line in enumerate(lines[1:])]
    table.write_text("\n".join(lines) + "\n")
    dm = _dm(table, multi_label=True, val_fraction=0.2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (4, 3)
    assert set(batch["label"].sum(1).tolist()) <= {1.0, 2.0}


def test_predict_on_a_folder_of_new_unlabelled_images(tmp_path, forms, records) -> None:
    new = tmp_path / "new"
    new.mkdir()
    for r in records[:5]:
        (new / f"{r.name}.jpg").write_bytes(r.data)
    dm = _dm(forms["folder"], predict_source=str(new))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert sum(len(b["index"]) for b in batches) == 5 and set(batches[0]["label"].tolist()) == {-1}
    assert dm.predict_names() == sorted(f"{r.name}.jpg" for r in records[:5])


def test_test_without_a_test_split_says_how_to_make_one(tmp_path, records) -> None:
    dm = _dm(write_folder(tmp_path / "tv", [r for r in records if r.split != "test"]))
    dm.setup("test")
    with pytest.raises(ValueError, match="no test split to test on.*test_fraction=0.1"):
        dm.test_dataloader()


def test_audio_from_a_saved_hugging_face_dataset_and_webdataset(tmp_path) -> None:
    clips = tone_records()
    saved = write_saved(tmp_path / "saved", clips, field="audio")
    dm = AudioDataModule(str(saved), batch_size=2, num_workers=0, sample_rate=8000, clip_seconds=0.25)
    assert dm.source_kind == "hf" and dm.class_names == ["noise_burst", "tone_low"]
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 8, "val": 4, "test": 0}
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (2, 2000) and batch["audio"].dtype == torch.float32
    wds = write_webdataset(tmp_path / "wds", clips, label="json")
    dm = AudioDataModule(str(wds), batch_size=2, num_workers=0, sample_rate=8000, clip_seconds=0.25)
    dm.setup("fit")
    assert dm.source_kind == "webdataset" and dm.split_sizes()["val"] == 4


def test_hub_names_load_through_datasets_from_a_local_repository_layout(tmp_path, records, monkeypatch) -> None:
    """``hf://<name>`` goes through ``datasets.load_dataset(name, subset, revision=...)``; a local folder laid out
    like a hub repository stands in for the hub (nothing is downloaded)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    repo = write_hub_parquet(tmp_path / "repo", records)
    dm = _dm(f"hf://{repo}", cache_dir=str(tmp_path / "cache"))
    assert dm.source_kind == "hf" and dm.num_classes == 3
    dm.prepare_data()
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 6}
    assert any((tmp_path / "cache" / "hf").rglob("*.arrow"))  # datasets' cache lives under cache_dir


@pytest.mark.parametrize("form", ["hf_saved", "webdataset"])
def test_a_corrupt_stored_sample_is_named_and_left_out(tmp_path, records, form) -> None:
    damaged = [r if i != 4 else type(r)(r.name, r.data[: len(r.data) // 3], r.label, r.split)
               for i, r in enumerate(records)]
    source = WRITERS[form](tmp_path / form, damaged)
    dm = _dm(source, max_bad_fraction=0.1, **({"class_names": list(CLASSES)} if form == "webdataset" else {}))
    with pytest.warns(UserWarning, match="unusable image sample"):
        dm.setup("fit")
    assert len(dm.bad_files) == 1 and next(iter(dm.bad_files.values())).startswith("truncated JPEG")
    assert sum(dm.split_sizes().values()) == len(records) - 1


def test_webdataset_tars_on_object_storage_are_fetched_once_per_node(tmp_path, records, s3_server) -> None:  # noqa: F811
    import boto3

    local = write_webdataset(tmp_path / "wds", records)
    client = boto3.client("s3")
    for tar in sorted(local.glob("*.tar")):
        client.upload_file(str(tar), "stoker", f"wds/{tar.name}")
    dm = _dm("s3://stoker/wds/", class_names=list(CLASSES), cache_dir=str(tmp_path / "cache"))
    assert dm.source_kind == "webdataset"
    dm.prepare_data()
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 6}
    assert len(list((tmp_path / "cache" / "webdataset").rglob("*.tar"))) == len(list(local.glob("*.tar")))
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("form", ["table", "hf_parquet", "webdataset"])
def test_dali_decodes_every_source_in_cpu_only_mode(forms, form) -> None:
    pytest.importorskip("nvidia.dali")
    kwargs = {"class_names": list(CLASSES)} if form == "webdataset" else {}
    dali = _dm(forms[form], decode="dali", dali_threads=1, hflip=0.0, **kwargs)
    cpu = _dm(forms[form], hflip=0.0, **kwargs)
    for dm in (dali, cpu):
        dm.setup("fit")
    batch = next(iter(dali.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 32, 32)
    seen = sorted(i for b in dali.val_dataloader() for i in b["index"].tolist())
    assert seen == list(range(6))
    labels = {int(i): int(y) for b in dali.val_dataloader() for i, y in zip(b["index"], b["label"])}
    assert labels == {i: int(label) for i, (_, label) in enumerate(cpu.splits["val"])}


def test_the_demo_recipe_scan_passes_and_every_source_describes_itself(forms) -> None:
    for form, source in forms.items():
        dm = _dm(source, **({"class_names": list(CLASSES)} if form == "webdataset" else {}))
        info = dm.describe()
        assert info["source_kind"] in ("folder", "table", "hf", "webdataset", "shards")


def test_setup_says_when_per_class_rounding_drifts_from_the_asked_share(tmp_path, records) -> None:
    train = [r for r in records if r.split == "train"]
    few = [r for r in train if r.label == "bird"][:5] + [r for r in train if r.label == "cat"][:5] + \
        [r for r in train if r.label == "dog"][:1]  # 5, 5 and a single dog
    root = write_folder(tmp_path / "few", few, presplit=False)
    dm = _dm(root, val_fraction=0.1)
    with pytest.warns(UserWarning, match=r"val_fraction=0.1 asked, 2 of 11 samples \(18.2%\) held out.*1 class\(es\) "
                                         r"have no val sample \(e.g. \['dog'\]\)"):
        dm.setup("fit")
    assert dm.describe()["split_drift"]["val"]["classes_without"] == 1
