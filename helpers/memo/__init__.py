"""Capstone (06) — the support desk's decision memo, from the learner's own stored results and the claims ledger.

- ``helpers.memo.report``  what the memo uses (each input with its source: your lab run, or a labelled default),
                           cost per option with intervals, quality and latency measured, risks (claims that did
                           not hold), a computed recommendation, and the shareable HTML report
"""
from .report import *  # noqa: F401,F403
