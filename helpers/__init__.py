"""Own the Stack: the small package behind the course notebooks.

One module per concern (see README, "Architecture"):

- ``helpers.paths``      where the repo, datasets and the model cache live
- ``helpers.errors``     the errors a learner meets, each naming its fix
- ``helpers.data``       loading dated, sourced data files with row-numbered errors
- ``helpers.hardware``   detect CPU/GPU, the GPU spec table, the roofline
- ``helpers.catalog``    the model catalog and memory estimates
- ``helpers.plan``       the per-lab, per-tier plan (model, precision, batch, memory, time)
- ``helpers.models``     resolve an id, load at a precision, chat and stream
- ``helpers.economics``  Lab 01: API vs self-hosting costs
- ``helpers.claims``     the course's claims ledger
- ``helpers.course``     setup cell, labs builder, grading (top layer; reads notebooks only)

Heavy libraries (torch, transformers) are imported inside the functions that need them, so
``import helpers`` stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

import logging as _logging

from .errors import KitError  # noqa: F401

# bitsandbytes logs, on CPUs with AVX512-BF16, that an optional `kernels` package is missing and
# falls back to its own kernels: noise for a learner, and it lands on whichever cell imports it first
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)


def show_environment() -> None:
    """Print the versions of the stack and the hardware found (first cell of every notebook)."""
    from .hardware import detect_hardware, versions

    for name, version in versions().items():
        print(f"{name:>14}: {version}")
    print(f"{'hardware':>14}: {detect_hardware().summary()}")
    from .errors import install_notebook_handler

    install_notebook_handler()
