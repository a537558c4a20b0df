"""Thin LightningModules used by the recipes; every one accepts soft targets."""

from stoker.models.image import ImageClassifier

__all__ = ["ImageClassifier"]
