"""Finds the target class that ``--target`` names, the way Locust finds a locustfile.

``--target FILE.py:Class`` imports the file (its directory first on ``sys.path``, so the file can
import its neighbours); ``--target package.module:Class`` imports the module. Empty means
cachestorm's own reference cache.

The target's own options must be in Locust's parser before the command line is parsed, so
:func:`spec_before_parsing` reads ``--target`` from the command line or ``CACHESTORM_TARGET``
first, as Locust itself reads ``-f`` first.

Example::

    >>> load("cachestorm.reference:ReferenceCache").__name__
    'ReferenceCache'
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT = "cachestorm.reference:ReferenceCache"
REQUIRED = ("key", "read", "write", "reset", "sweep", "close")
HINT = "give --target FILE.py:Class or --target package.module:Class"


class TargetLoadError(Exception):
    """``--target`` names nothing loadable; the message is one line for the user."""


_cache: dict[str, type] = {}


def load(spec: str) -> type[Any]:
    """The class ``spec`` names (``""`` for the reference cache), imported once per process."""
    spec = spec.strip() or DEFAULT
    if spec in _cache:
        return _cache[spec]
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise TargetLoadError(f"--target is {spec!r}: {HINT}.")
    try:
        module = _import_file(where) if where.endswith(".py") else importlib.import_module(where)
    except TargetLoadError:
        raise
    except ModuleNotFoundError as e:
        raise TargetLoadError(f"--target is {spec!r}: cannot import {e.name!r}; {HINT}.") from None
    except Exception as e:
        raise TargetLoadError(f"--target is {spec!r}: importing it raised {type(e).__name__}: {e}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise TargetLoadError(f"--target is {spec!r}: {where} has no class {name!r}.")
    missing = [m for m in REQUIRED if not callable(getattr(cls, m, None))]
    if missing:
        raise TargetLoadError(
            f"--target is {spec!r}: {name} lacks {', '.join(missing)} (see docs/targets.md for what a "
            "target provides)."
        )
    _cache[spec] = cls
    return cls


def _import_file(path_text: str) -> Any:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise TargetLoadError(f"--target names {path_text!r}, which is not a file; {HINT}.")
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = f"cachestorm_target_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def spec_before_parsing(argv: Sequence[str] | None = None) -> str:
    """``--target``'s value from the command line, else from ``CACHESTORM_TARGET``, else ``""``."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--target" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--target="):
            return arg.split("=", 1)[1]
    return os.environ.get("CACHESTORM_TARGET", "")
