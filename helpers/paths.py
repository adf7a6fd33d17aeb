"""Where things live: the repository, its data files and the user cache."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS = REPO_ROOT / "datasets"
# quick mode: same code, CI-sized steps and rows (set for the student copies in CI and `gpu-check --quick`)
QUICK_VAR = "OTS_QUICK"


def quick_mode() -> bool:
    return os.environ.get(QUICK_VAR, "").strip().lower() in {"1", "true", "yes"}


def quick_variant(path: Path) -> Path:
    """Where a quick-mode run keeps what it would write to ``path`` (``results.json`` -> ``results.quick.json``),
    so CI-sized numbers never replace a full run's in the same folder."""
    return path.with_name(f"{path.stem}.quick{path.suffix}")


@contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock beside ``path`` (``<path>.lock``) for a read-modify-write or a one-time job:
    several processes (two pytest workers, a learner's two notebooks) then take turns instead of losing each
    other's writes. Where no lock can be taken (a read-only folder, no ``fcntl``), the work goes on unlocked."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "w")
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # closing the file releases the lock


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.replace(handle.name, path)


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
