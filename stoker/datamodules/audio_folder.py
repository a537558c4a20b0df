"""AudioFolderDataModule: the name audio class-folder trees have always used, now a thin name over AudioDataModule."""

from __future__ import annotations

from stoker.data.file_dataset import BadSamplePolicy
from stoker.data.loader import WorkerType
from stoker.datamodules.audio import AudioDataModule
from stoker.datamodules.source import Verify


class AudioFolderDataModule(AudioDataModule):
    """Audio classification from a folder tree: :class:`AudioDataModule` with ``root``.

    Kept so that code and recipes written for it run unchanged; it takes every source
    :class:`AudioDataModule` takes (``root`` is its ``source``).

    Args:
        root: Dataset root: ``root/<class>/<file>`` or ``root/train|val|test/<class>/…`` (or any other source).
        batch_size: See :class:`AudioDataModule` (so are the rest).
        worker_type: See :class:`~stoker.datamodules.base.StokerDataModule`.
        num_workers: See :class:`AudioDataModule`.
        sample_rate: See :class:`AudioDataModule`.
        clip_seconds: See :class:`AudioDataModule`.
        val_fraction: See :class:`AudioDataModule`.
        test_fraction: See :class:`AudioDataModule`.
        seed: See :class:`AudioDataModule`.
        n_fft: See :class:`AudioDataModule`.
        win_length: See :class:`AudioDataModule`.
        hop_length: See :class:`AudioDataModule`.
        n_mels: See :class:`AudioDataModule`.
        f_min: See :class:`AudioDataModule`.
        f_max: See :class:`AudioDataModule`.
        top_db: See :class:`AudioDataModule`.
        normalize: See :class:`AudioDataModule`.
        freq_masks: See :class:`AudioDataModule`.
        freq_mask_width: See :class:`AudioDataModule`.
        time_masks: See :class:`AudioDataModule`.
        time_mask_width: See :class:`AudioDataModule`.
        max_bad_fraction: See :class:`AudioDataModule`.
        verify: See :class:`AudioDataModule`.
        on_bad_sample: See :class:`AudioDataModule`.
        quarantine: See :class:`AudioDataModule`.
        manifest: See :class:`AudioDataModule`.
        strict_fingerprint: See :class:`AudioDataModule`.
        val_list: See :class:`AudioDataModule`.
        test_list: See :class:`AudioDataModule`.
        class_names: See :class:`AudioDataModule`.
        cache_dir: See :class:`AudioDataModule`.
        predict_source: See :class:`AudioDataModule`.
        pin_memory: See :class:`AudioDataModule`.
        persistent_workers: See :class:`AudioDataModule`.
        prefetch_factor: See :class:`AudioDataModule`.

    Example::

        dm = AudioFolderDataModule("data/speech_commands", val_list="validation_list.txt",
                                   test_list="testing_list.txt")
    """

    def __init__(
        self,
        root: str,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        sample_rate: int = 16000,
        clip_seconds: float = 1.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        n_fft: int = 512,
        win_length: int | None = 400,
        hop_length: int | None = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float | None = 80.0,
        normalize: bool = True,
        freq_masks: int = 2,
        freq_mask_width: int = 8,
        time_masks: int = 2,
        time_mask_width: int = 20,
        max_bad_fraction: float = 0.01,
        verify: Verify = "decode",
        on_bad_sample: BadSamplePolicy = "raise",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        val_list: str | None = None,
        test_list: str | None = None,
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        predict_source: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(
            root, worker_type=worker_type,
            batch_size=batch_size, num_workers=num_workers, sample_rate=sample_rate, clip_seconds=clip_seconds,
            val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, n_fft=n_fft, win_length=win_length,
            hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max, top_db=top_db, normalize=normalize,
            freq_masks=freq_masks, freq_mask_width=freq_mask_width, time_masks=time_masks,
            time_mask_width=time_mask_width, max_bad_fraction=max_bad_fraction, verify=verify,
            on_bad_sample=on_bad_sample, quarantine=quarantine, manifest=manifest,
            strict_fingerprint=strict_fingerprint, val_list=val_list, test_list=test_list, class_names=class_names,
            cache_dir=cache_dir, predict_source=predict_source, pin_memory=pin_memory,
            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor,
        )
