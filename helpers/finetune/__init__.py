"""Lab 03 — LoRA / QLoRA fine-tuning on the support-desk task, with a before/after evaluation.

- ``helpers.finetune.lora``    validated tickets, prompts, LoRA/QLoRA adapters, training, prediction,
                               evaluation with intervals, adapter save/reload/merge, run settings per plan
- ``helpers.finetune.full``    LoRA's yardstick: full fine-tuning of the same top layers, side by side
- ``helpers.finetune.phrasing`` where the errors are: held-out rows grouped by the phrasing they were made from
- ``helpers.finetune.claims``  the fine-tuning claims (C9-C12) tested with those results

``from helpers import finetune as ft`` gives the functions as ``ft.<name>`` and the claim checks as ``ft.claims``.
"""
from . import claims  # noqa: F401
from .lora import *  # noqa: F401,F403
from .full import *  # noqa: F401,F403
from .phrasing import *  # noqa: F401,F403
