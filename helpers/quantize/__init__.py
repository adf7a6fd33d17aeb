"""Lab 02 — running quantized open models: each precision measured (memory, speed, quality), what fits where.

- ``helpers.quantize.measure``  profile precisions, perplexity, agreement, roofline, GGUF engines, fits table
- ``helpers.quantize.claims``   the hardware claims (C6-C8) tested with those measurements

``from helpers import quantize as q`` gives the measurements as ``q.<name>`` and the claim checks as ``q.claims``.
"""
from . import claims  # noqa: F401
from .measure import *  # noqa: F401,F403
