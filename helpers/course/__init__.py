"""Course tooling, the top layer (it reads notebooks and runs the grading engine; no lab logic here):

- ``helpers.course.labs``           setup cell + Colab badge, student copies built from the solutions
- ``helpers.course.grading``        exercise checks in the notebook, grading a class with otter-grader
- ``helpers.course.pytest_plugin``  runs the student copies in quick mode under pytest
- ``helpers.course.gpu_check``      validates a GPU machine (``bash kit gpu-check``)

    python -m helpers.course build [LAB ...]
    python -m helpers.course grade DIR [LAB]
"""
from .grading import *  # noqa: F401,F403
from .grading import TIMEOUT_SAFETY, MIN_TIMEOUT_S, RETRY_FACTOR  # noqa: F401
from .labs import *  # noqa: F401,F403
