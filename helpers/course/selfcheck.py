"""``bash kit test`` in a student release (no tests/, no solutions): the set-up self-check a learner runs on day one.

It checks what a learner needs before Lab 00, in about a minute on a laptop CPU: the Python and the packages, the
hardware plan, the embedded model (loaded through the same loader as hub models, and asked for a few tokens), and
every lab in ``labs/``: the notebook opens, its checks load in otter, and each check answers an untouched exercise
with "not done yet" (so ``grader.check("q1")`` works there). One line per step, a fix for each failure, exit 0 only
when all passed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..paths import REPO_ROOT


def _lab_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "labs").glob("[0-9][0-9]_*") if (p / f"{p.name}.ipynb").is_file())


def _stub_namespace(test_file) -> dict:
    """Every name a check reads, as an untouched exercise leaves it (``...``)."""
    from .trusted import case_source, free_names

    names = set()
    for case in test_file.test_cases:
        names |= free_names(case_source(case.body))
    return {name: ... for name in names}


def check_lab(folder: Path) -> str | None:
    """None when ``folder``'s notebook opens and every check answers its untouched exercise with "not done yet"."""
    import nbformat
    from otter.test_files import OKTestFile

    try:
        nbformat.validate(nbformat.read(folder / f"{folder.name}.ipynb", as_version=4))
    except Exception as error:  # noqa: BLE001
        return f"the notebook does not open ({type(error).__name__}): download the release again"
    tests = sorted((folder / "tests").glob("q*.py"))
    if not tests:
        return "no checks in tests/: download the release again"
    for path in tests:
        test_file = OKTestFile.from_file(str(path))
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            test_file.run(_stub_namespace(test_file))
        said = " ".join(str(r.message) for r in test_file.test_case_results)
        if "not done yet" not in said:
            return f"the check {path.stem} did not answer an untouched exercise: reinstall with `bash kit setup`"
    return None


def run(root: Path = REPO_ROOT) -> int:
    steps: list[tuple[str, bool, str]] = []

    def step(name: str, action):
        start = time.perf_counter()
        try:
            detail = action() or ""
            ok = True
        except Exception as error:  # noqa: BLE001 - each failure is one line with its fix
            ok, detail = False, f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        steps.append((name, ok, detail))
        mark = "✓" if ok else "✗"
        print(f"{mark} {name}: {detail} ({time.perf_counter() - start:.1f} s)", flush=True)
        return ok

    def packages():
        import importlib.metadata as md

        names = ("torch", "transformers", "peft", "otter-grader", "jupyterlab")
        return f"Python {sys.version.split()[0]}; " + ", ".join(f"{n} {md.version(n)}" for n in names)

    def hardware_plan():
        from ..plan import plan

        p = plan("00")
        return f"{p.model} in {p.precision} on {p.device}"

    def embedded_model():
        from ..models import chat, load_model
        from ..plan import plan

        model, tokenizer = load_model(plan=plan("00"))
        reply = chat(model, tokenizer, "Say hello.", max_new_tokens=5)
        if not reply.strip():
            raise RuntimeError("the model answered nothing: run `bash kit setup` again")
        return f"answered {reply.strip()[:40]!r}"

    step("packages", packages)
    step("hardware plan", hardware_plan)
    step("embedded model", embedded_model)
    folders = _lab_folders(root)
    if not folders:
        steps.append(("labs", False, "no labs/ folder"))
        print("✗ labs: no labs/ folder here: run this from the course folder")
    for folder in folders:
        def lab(folder=folder):
            problem = check_lab(folder)
            if problem:
                raise RuntimeError(problem)
            return "opens; its checks answer"
        step(folder.name, lab)
    failed = [name for name, ok, _ in steps if not ok]
    if failed:
        print(f"\n{len(failed)} of {len(steps)} set-up checks failed ({', '.join(failed)}): fix the first one and run `bash kit test` again")
        return 1
    print(f"\nAll {len(steps)} set-up checks passed. Open the labs with `bash kit lab` (or the Colab badge in each notebook).")
    return 0
