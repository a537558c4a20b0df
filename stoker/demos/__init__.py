"""Offline demo datasets built from real data that ships with Python packages, and their DataModules.

Each demo DataModule is a production DataModule plus one step: it writes its dataset on first use
(:class:`stoker.demos.base.BuiltOnFirstUse`), so the recipes run with no download.
"""

from stoker.demos.digits import DIGIT_CLASSES, DigitsDataModule, build_digits_folder
from stoker.demos.docstrings import TOPICS, DocstringCorpusDataModule, DocstringTopicsDataModule, build_docstring_topics
from stoker.demos.tones import TONE_CLASSES, ToneDataModule, build_audio_tones

__all__ = [
    "DIGIT_CLASSES",
    "TONE_CLASSES",
    "TOPICS",
    "DigitsDataModule",
    "DocstringCorpusDataModule",
    "DocstringTopicsDataModule",
    "ToneDataModule",
    "build_audio_tones",
    "build_digits_folder",
    "build_docstring_topics",
]
