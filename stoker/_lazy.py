"""Package namespaces that import their modules on first use (PEP 562).

A package ``__init__`` that re-exports its public names eagerly imports every module at once: the
import of one light module (a seed function) then pulls in torch and every sibling, and two
packages that import each other's modules form a cycle. :func:`lazy_namespace` maps each public
name to the module that defines it and imports that module when the name is first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_namespace(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that resolve ``exports`` (public name -> module) on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
