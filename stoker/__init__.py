"""stoker: PyTorch Lightning DataModules and Callbacks that keep the accelerator fed."""

from stoker.datamodules import DigitsDataModule, ImageFolderDataModule, StokerDataModule
from stoker.models import ImageClassifier

__version__ = "0.1.0"

__all__ = ["DigitsDataModule", "ImageClassifier", "ImageFolderDataModule", "StokerDataModule", "__version__"]
