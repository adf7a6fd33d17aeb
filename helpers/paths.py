"""Where things live: the repository, its data files and the user cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS = REPO_ROOT / "datasets"


def cache_dir() -> Path:
    """The user cache for converted models and results (``OTS_CACHE`` overrides it).

    Default: ``$XDG_CACHE_HOME/own-the-stack`` or ``~/.cache/own-the-stack``.
    """
    override = os.environ.get("OTS_CACHE")
    if override:
        path = Path(override).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "own-the-stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def dataset(name: str) -> Path:
    """Path of a file under ``datasets/``; raises a clear error if it is missing."""
    path = DATASETS / name
    if not path.exists():
        from .errors import KitError

        raise KitError(
            f"data file datasets/{name} is missing",
            fix="run from a full checkout of the kit (git clone), not a copy of one notebook",
        )
    return path
