"""stoker Callbacks: one per file."""

__all__: list[str] = []
