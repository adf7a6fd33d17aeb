"""``python -m helpers.bench.lm_eval_main ...``: lm_eval's own command line, indexing only the kit's task folder.

lm_eval builds an index of every task YAML it ships (thousands) at each start, even when ``--include_path``
names the only task a run uses: 9 s of a 41 s six-row check on the CI machine. Its ``TaskManager`` can skip
that (``include_defaults=False``) but its command line has no flag for it, so this entry point sets that
default and then runs lm_eval's ``cli_evaluate`` unchanged (same flags, same results and samples files).
"""
import functools
import sys

from lm_eval.__main__ import cli_evaluate
from lm_eval.tasks import TaskManager


def index_only_included_tasks() -> None:
    """From now on in this process, lm_eval's task index holds only the ``--include_path`` folders."""
    TaskManager.__init__ = functools.partialmethod(TaskManager.__init__, include_defaults=False)


if __name__ == "__main__":
    index_only_included_tasks()
    sys.exit(cli_evaluate())
