"""Thin LightningModules used by the recipes; every one accepts soft targets."""

from stoker.models.audio import AudioClassifier
from stoker.models.classifier import StokerClassifier
from stoker.models.image import ImageClassifier
from stoker.models.lm import LanguageModel
from stoker.models.text import TextClassifier

__all__ = ["AudioClassifier", "ImageClassifier", "LanguageModel", "StokerClassifier", "TextClassifier"]
