"""Train an image classifier on a folder of images with plain Python (no config file).

    python examples/train_image_folder.py                 # the digits, built offline under data/digits
    python examples/train_image_folder.py --root PATH     # your own root/<class>/<image> tree

The DataModule decodes on CPU workers and hands uint8 batches over; normalization happens on the
device. Add ``--fast-dev-run`` for a one-batch smoke run.
"""

from __future__ import annotations

import argparse

import lightning as L

from stoker.datamodules import DigitsDataModule, ImageFolderDataModule
from stoker.models import ImageClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="image-folder root; default: the embedded digits")
    parser.add_argument("--model", default="resnet10t", help="timm model name")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--fast-dev-run", action="store_true")
    args = parser.parse_args()

    if args.root:
        datamodule: ImageFolderDataModule = ImageFolderDataModule(
            args.root, batch_size=args.batch_size, image_size=args.image_size, val_fraction=0.1
        )
    else:
        datamodule = DigitsDataModule(batch_size=args.batch_size, image_size=args.image_size)
    model = ImageClassifier(args.model, num_classes=datamodule.num_classes or 2)
    trainer = L.Trainer(
        max_epochs=args.max_epochs, fast_dev_run=args.fast_dev_run, logger=False, enable_checkpointing=False
    )
    trainer.fit(model, datamodule=datamodule)
    if not args.fast_dev_run:
        print(trainer.validate(model, datamodule=datamodule, verbose=False))


if __name__ == "__main__":
    main()
