"""Own the Stack: the small package behind the course notebooks.

A shared core, one subpackage per course stage, and the course tooling on top (README, "Architecture").

Core (every lab uses it):

- ``helpers.paths``          where the repo, datasets and the model cache live
- ``helpers.errors``         the errors a learner meets, each naming its fix
- ``helpers.data``           dated, sourced data files with row-numbered errors; recorded results files
- ``helpers.hardware``       detect CPU/GPU, the GPU spec table, usable memory, the roofline
- ``helpers.catalog``        the model catalog and memory estimates (weights, KV cache)
- ``helpers.plan``           the per-lab, per-tier plan: the one place hardware-dependent choices are made
- ``helpers.models``         resolve an id, load at a precision, chat and stream
- ``helpers.random_models``  random-weight models from real configs (GPU checks without downloads)
- ``helpers.ledger``         the course's claims ledger (seed claims, verdict vocabulary)
- ``helpers.results``        the learner's own measurements, saved by each lab for the later ones

Course stages (lab number -> subpackage, each with its logic and a ``claims`` module):

- Lab 01 ``helpers.tco``       API vs self-hosting costs
- Lab 02 ``helpers.quantize``  precisions measured: memory, speed, quality, what fits where
- Lab 03 ``helpers.finetune``  LoRA / QLoRA on the support-desk task, before/after evaluation
- Lab 04 ``helpers.bench``     one harness for every engine: latency, throughput, roofline, $ per 1M tokens, quality
- Lab 05 ``helpers.deploy``    router, ledger (SQLite or shared PostgreSQL), PII detection, stand-in paid API, a day of traffic
- Lab 06 ``helpers.memo``      the capstone decision memo from the stored results and the claims ledger (HTML report)

Course tooling: ``helpers.course`` (setup cell, labs builder, grading, pytest plugin, GPU check).

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
    readable_tables()


def readable_tables() -> None:
    """Tables wrap instead of cutting cells with "…" (a model name, a reason, a risk): pandas shows every column and
    whole cell texts in the notebooks; and no table's dollar amounts are typeset as maths."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a kit dependency
        return
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 200)
    # money is written with "$": JupyterLab's MathJax read "$74,265 ($30,497-$166,370)" as inline maths (italic, the
    # dollar signs gone); these options mark every table (DataFrame and Styler) for MathJax to leave alone
    pd.set_option("display.html.use_mathjax", False)
    pd.set_option("styler.html.mathjax", False)
