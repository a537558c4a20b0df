"""ShardedAudioDataModule: recordings from a shard set (``stoker pack``); a thin name over AudioDataModule."""

from __future__ import annotations

from typing import Any

from stoker.data.file_dataset import BadSamplePolicy
from stoker.datamodules.audio import AudioDataModule


class ShardedAudioDataModule(AudioDataModule):
    """Audio classification from a shard set written by ``stoker pack``: :class:`AudioDataModule` on shards.

    Batches, features, equal shares, exactly-once evaluation and exact resume as documented there and in
    :mod:`stoker.data.sources.shards.stream`.

    Args:
        source: The shard set (a folder or an ``s3://``/``gs://``/``r2://`` URL) from ``stoker pack``.
        batch_size: See :class:`AudioDataModule` (so are the rest).
        num_workers: See :class:`AudioDataModule`.
        sample_rate: See :class:`AudioDataModule`.
        clip_seconds: See :class:`AudioDataModule`.
        cache_dir: Node-local cache root; the chunks of a remote set go under ``<cache_dir>/chunks``.
        max_cache_size: litdata's chunk-cache budget (e.g. ``"200GB"``).
        storage_options: Options for the object-store client.
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
        on_bad_sample: See :class:`AudioDataModule`.
        strict_fingerprint: See :class:`AudioDataModule`.
        pin_memory: See :class:`AudioDataModule`.
        persistent_workers: See :class:`AudioDataModule`.
        prefetch_factor: See :class:`AudioDataModule`.

    Example::

        dm = ShardedAudioDataModule("s3://bucket/speech-shards", sample_rate=16000, cache_dir="/nvme/cache")
    """

    def __init__(
        self,
        source: str,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        sample_rate: int = 16000,
        clip_seconds: float = 1.0,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
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
        on_bad_sample: BadSamplePolicy = "raise",
        strict_fingerprint: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(
            source, batch_size=batch_size, num_workers=num_workers, sample_rate=sample_rate, clip_seconds=clip_seconds,
            cache_dir=cache_dir, max_cache_size=max_cache_size, storage_options=storage_options, seed=seed,
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
            top_db=top_db, normalize=normalize, freq_masks=freq_masks, freq_mask_width=freq_mask_width,
            time_masks=time_masks, time_mask_width=time_mask_width, on_bad_sample=on_bad_sample,
            strict_fingerprint=strict_fingerprint, pin_memory=pin_memory, persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
        )
