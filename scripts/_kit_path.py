"""Put the kit's ``helpers`` on sys.path for the scripts, without the repo root itself.

The repo root holds ``datasets/``, which would pass for Hugging Face's ``datasets`` package (the
Trainer imports it). ``pip install -e .`` already makes ``helpers`` importable; this covers a plain
checkout (a GPU machine with only wheels carried over).
"""
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import helpers  # noqa: F401
except ImportError:
    link = Path(tempfile.gettempdir()) / "own-the-stack-path"
    link.mkdir(exist_ok=True)
    if not (link / "helpers").exists():
        (link / "helpers").symlink_to(ROOT / "helpers")
    sys.path.insert(0, str(link))
