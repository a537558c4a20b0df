"""Availability of optional dependencies, in one place.

Each flag is a :class:`lightning_utilities.RequirementCache` keyed by the distribution name, so
checking it never imports the package. Code that needs an extra imports it inside the function
and calls :func:`require` first, which raises a message naming the extra to install.
"""

from __future__ import annotations

from lightning_utilities.core.imports import RequirementCache

_TRANSFORMERS_AVAILABLE = RequirementCache("transformers")
_DATASETS_AVAILABLE = RequirementCache("datasets")
_PANDAS_AVAILABLE = RequirementCache("pandas")
_DALI_AVAILABLE = RequirementCache("nvidia-dali-cuda120")
_TORCHAUDIO_AVAILABLE = RequirementCache("torchaudio")
_SOUNDFILE_AVAILABLE = RequirementCache("soundfile")
_TORCHCODEC_AVAILABLE = RequirementCache("torchcodec")
_SKLEARN_AVAILABLE = RequirementCache("scikit-learn")
_LITDATA_AVAILABLE = RequirementCache("litdata")

_EXTRAS: dict[str, tuple[RequirementCache, ...]] = {
    "hf": (_DATASETS_AVAILABLE,),
    "text": (_TRANSFORMERS_AVAILABLE, _DATASETS_AVAILABLE, _PANDAS_AVAILABLE),
    "dali": (_DALI_AVAILABLE,),
    "audio": (_TORCHAUDIO_AVAILABLE, _SOUNDFILE_AVAILABLE),
    "shards": (_LITDATA_AVAILABLE,),
}


def require(extra: str, feature: str) -> None:
    """Raise ``ModuleNotFoundError`` naming ``pip install 'stoker[extra]'`` when an extra is missing.

    Args:
        extra: One of ``"hf"``, ``"text"``, ``"dali"``, ``"audio"``, ``"shards"``.
        feature: What the caller was about to do, for the message (e.g. ``"DALIImageNetDataModule"``).

    Raises:
        ModuleNotFoundError: When any requirement of the extra is not installed.
    """
    if extra not in _EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {sorted(_EXTRAS)}")
    missing = [str(req.requirement) for req in _EXTRAS[extra] if not req]
    if missing:
        raise ModuleNotFoundError(
            f"{feature} needs {', '.join(missing)}, which is not installed. "
            f"Install it with: pip install 'stoker[{extra}]'"
        )
