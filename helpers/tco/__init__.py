"""Lab 01 — TCO economics: what a proprietary API costs at scale vs self-hosting an open model.

- ``helpers.tco.costs``   workloads, API prices, self-hosting capacity and cost, break-even, sensitivity
- ``helpers.tco.claims``  the source articles' cost claims (C1-C5, C17) tested with those numbers

``from helpers import tco`` gives the cost functions as ``tco.<name>`` and the claim checks as ``tco.claims``.
"""
from . import claims  # noqa: F401
from .costs import *  # noqa: F401,F403
