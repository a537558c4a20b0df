"""What every demo DataModule shares: its dataset is written on first use, then read as usual."""

from __future__ import annotations


class BuiltOnFirstUse:
    """Mixin for a DataModule whose data is generated: :meth:`build` runs before ``prepare_data`` and ``setup``.

    ``prepare_data`` runs once per node; ``setup`` builds too, so a DataModule used without a
    Trainer (or on a node whose local rank zero is elsewhere) still finds its files. Builders are
    idempotent: a marker file with the settings makes a second call return at once.
    """

    def build(self) -> None:
        """Write the dataset (a no-op when it is already there with the same settings)."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        self.build()
        super().prepare_data()  # type: ignore[misc]

    def setup(self, stage: str | None = None) -> None:
        self.build()
        super().setup(stage)  # type: ignore[misc]

    def created_files(self) -> list[str]:
        """The demo's dataset, written on first use, besides what the DataModule caches."""
        root = str(getattr(self, "root", ""))
        return [f"{root} (the demo dataset, written on first use)", *super().created_files()]  # type: ignore[misc]
