"""Scoring a submission without trusting its kernel: the sandbox reports data, the grader judges it.

A notebook's kernel can patch any module it imports (``helpers.models.chat = lambda *a: "x"``) and forge
anything it writes, so a score computed inside it proves nothing. Grading therefore runs in two passes:

1. **In the sandbox** (untrusted) the submission runs with the *public* checks only: the hidden tests are
   not in its autograder. A last cell, appended by the grader, calls :func:`export_answers`: it writes the
   values the tests read (plain data: numbers, strings, tables, the kit's dataclasses) to ``answers.json``,
   and for exercises that ask for a function it runs the probes (the public checks' calls and the hidden
   tests' ``# probe`` lines, which hold inputs, never expected values) and records each call and result.
2. **In the grading process** (trusted; no learner code runs there) :func:`score_answers` runs every test,
   public and hidden, with otter's own test runner over a namespace rebuilt from that file: the learner's
   data from the export, the kit's functions and modules imported fresh (the names the *solution* imports,
   whatever the learner bound them to), the model and tokenizer loaded from the lab's plan, and each
   learner function replaced by a replay of its recorded calls. Expected values are therefore computed by
   unpatched kit code, or were never in the sandbox.

What this does not stop: a notebook that forges ``answers.json`` only chooses its own answers, and one
that hard-codes a function's outputs for the probes' inputs (visible in the sandbox) passes those
probes, as it would in any autograder whose inputs are known.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import doctest
import importlib
import json
import math
import re
import threading
import zipfile
from pathlib import Path

PROVIDED = ("model", "tokenizer")  # loaded by the grader from the lab's plan, never taken from the kernel
TRUSTED_PREFIXES = ("helpers.",)  # whose dataclasses may be rebuilt from a submission's data
MAX_ANSWERS_BYTES = 20_000_000
PROBE_MARK = "# probe"
_SCORING = threading.Lock()


# ----------------------------------------------------------------------------- what the tests read
def case_source(code: str) -> str:
    """The Python source of one otter (doctest-format) test case."""
    return "".join(example.source for example in doctest.DocTestParser().get_examples(code))


def free_names(source: str) -> set[str]:
    """Names a piece of test code reads but neither assigns, imports nor takes as a parameter."""
    tree = ast.parse(source)
    stored, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stored |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return loaded - stored - set(dir(builtins))


def solution_bindings(solution_nb) -> tuple[dict[str, tuple[str, str | None]], set[str]]:
    """From the solution notebook: the names it imports (name -> (module, attribute or None)) and the
    names it defines with ``def`` (the exercises' functions)."""
    imports: dict[str, tuple[str, str | None]] = {}
    functions: set[str] = set()
    for cell in solution_nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    imports[alias.asname or alias.name.split(".")[0]] = (alias.name if alias.asname else alias.name.split(".")[0], None)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.FunctionDef):
                functions.add(node.name)
    return imports, functions


def _tests_in_zip(autograder: Path) -> dict[str, dict]:
    tests = {}
    with zipfile.ZipFile(autograder) as archive:
        for name in sorted(archive.namelist()):
            if re.fullmatch(r"tests/[^/]+\.py", name):
                scope: dict = {}
                exec(compile(archive.read(name).decode(), name, "exec"), scope)  # noqa: S102 - our own build output
                tests[name] = scope["test"]
    return tests


def hidden_probes(solution_nb) -> dict[str, str]:
    """Per question, the hidden tests' ``# probe`` lines (calls of the learner's function, inputs only)."""
    probes: dict[str, list[str]] = {}
    question = None
    for cell in solution_nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            found = re.search(r"^name:\s*(\S+)", cell.source, re.M)
            question = found.group(1) if found else None
        elif cell.cell_type == "code" and question and "hidden: true" in cell.source:
            probes.setdefault(question, []).extend(line.split(PROBE_MARK)[0].rstrip() for line in cell.source.splitlines()
                                                   if line.rstrip().endswith(PROBE_MARK))
    return {question: "\n".join(lines) for question, lines in probes.items()}


def grading_spec(solution_nb, autograder: Path, lab: str | None = None) -> dict:
    """What the sandbox must report for a lab: data names, function names and the probe code per question. With
    ``lab``, refuses tests that read a notebook name which is neither an answer nor the lab's declared measured context."""
    imports, functions = solution_bindings(solution_nb)
    tests = _tests_in_zip(autograder)
    names: set[str] = set()
    probes: dict[str, str] = {}
    for test in tests.values():
        sources = [case_source(case["code"]) for suite in test["suites"] for case in suite["cases"]]
        for source in sources:
            names |= free_names(source)
        public = [case_source(case["code"]) for suite in test["suites"] for case in suite["cases"] if not case.get("hidden")]
        probes[test["name"]] = "\n".join(public)
    for question, code in hidden_probes(solution_nb).items():
        probes[question] = probes.get(question, "") + "\n" + code
        names |= free_names(code)
    provided = sorted(names & set(PROVIDED))
    names -= set(imports) | set(PROVIDED)
    context = set(lab_context(lab)) if lab else set()
    if lab:
        loose = names - functions - answer_names(solution_nb) - context
        if loose:
            raise RuntimeError(f"{lab}: the tests read {sorted(loose)}, which the notebook sets outside an answer: a learner could rebind "
                               "them to pass. Compute the expected value from the kit's data in the test (helpers.course.checks), "
                               f"or declare a measured table in helpers/course/checks/lab{lab[:2]}.py CONTEXT with a validator")
    return {"functions": sorted(names & functions), "data": sorted(names - functions), "probes": probes, "provided": provided,
            "context": sorted(names & context)}


def lab_context(lab: str) -> dict:
    """The measured names ``lab``'s checks may read besides the answers (name -> validator), from its checks module."""
    try:
        module = importlib.import_module(f"helpers.course.checks.lab{lab[:2]}")
    except ModuleNotFoundError:
        return {}
    return dict(getattr(module, "CONTEXT", {}))


def answer_names(solution_nb) -> set[str]:
    """The names the learner's answers bind: assigned (or defined) by the lines otter replaces in the solution's answer
    cells (the ``# SOLUTION`` lines where a cell marks some, else the whole cell)."""
    from .labs import answer_cell_sources

    names: set[str] = set()
    for cell_source in answer_cell_sources(solution_nb):
        lines = [line for line in cell_source.splitlines() if not line.lstrip().startswith(("%", "!", "# BEGIN", "# END"))]
        marked = [line for line in lines if re.search(r"#\s*SOLUTION\s*$", line)]
        try:
            tree = ast.parse("\n".join(marked or lines))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


def public_autograder(autograder: Path, out: Path) -> Path:
    """A copy of the autograder zip with every hidden test case removed: what the sandbox gets."""
    import pprint

    with zipfile.ZipFile(autograder) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        tests = _tests_in_zip(autograder)
        for item in source.infolist():
            if item.filename in tests:
                test = tests[item.filename]
                for suite in test["suites"]:
                    suite["cases"] = [case for case in suite["cases"] if not case.get("hidden")]
                test["points"] = sum(case.get("points") or 0 for suite in test["suites"] for case in suite["cases"]) or None
                if test["points"] is None:
                    test.pop("points")
                target.writestr(item, "OK_FORMAT = True\n\ntest = " + pprint.pformat(test, width=200) + "\n")
            else:
                target.writestr(item, source.read(item))
    return out


# ----------------------------------------------------------------------------- in the sandbox
def _plain(value, depth: int = 0):
    """``value`` as JSON-able data, tagged so :func:`_rebuild` can restore tuples, tables and the kit's dataclasses."""
    import numpy as np

    if depth > 40:
        raise ValueError("nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if value is ...:
        return {"__ellipsis__": True}
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), depth + 1)
    if isinstance(value, list):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_plain(item, depth + 1) for item in value]}
    if isinstance(value, dict):
        return {"__dict__": [[_plain(k, depth + 1), _plain(v, depth + 1)] for k, v in value.items()]}
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a kit dependency
        pd = None
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series)):
        frame = value.to_frame(name=value.name if value.name is not None else 0) if isinstance(value, pd.Series) else value
        return {"__frame__": {"series": isinstance(value, pd.Series),
                              "index": _plain(list(frame.index), depth + 1), "columns": _plain(list(frame.columns), depth + 1),
                              "data": _plain(frame.to_numpy(dtype=object).tolist(), depth + 1),
                              "attrs": _plain(dict(value.attrs), depth + 1)}}
    cls = type(value)
    if dataclasses.is_dataclass(value) and cls.__module__.startswith(TRUSTED_PREFIXES):
        return {"__dataclass__": [cls.__module__, cls.__qualname__],
                "fields": {f.name: _plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}}
    return {"__unavailable__": f"{cls.__module__}.{cls.__qualname__}"}


def _encoded(value) -> dict | list | str | int | float | bool | None:
    try:
        return _plain(value)
    except Exception as error:  # noqa: BLE001 - one value that cannot be written is reported, not fatal
        return {"__unavailable__": f"{type(value).__name__} ({type(error).__name__}: {error})"}


class _Recorder:
    """Wraps a learner's function: every call (arguments and result, or the error) is written down."""

    def __init__(self, function, calls: list):
        self._function, self._calls = function, calls

    def __call__(self, *args, **kwargs):
        key = json.dumps(_encoded([list(args), kwargs]), sort_keys=True)
        try:
            result = self._function(*args, **kwargs)
        except Exception as error:
            self._calls.append([key, {"__raised__": [type(error).__name__, str(error)[:300]]}])
            raise
        after = _encoded([list(args), kwargs])  # a function that changes its arguments in place: replayed in place too
        self._calls.append([key, _encoded(result)] + ([after] if json.dumps(after, sort_keys=True) != key else []))
        return result


_CELL_ERRORS: list[str] = []


def watch_errors() -> None:
    """Run in the submission's kernel, first: remember every exception a cell raises (the gradebook's error column
    reports them; a notebook that runs on past an error still shows what broke)."""
    def after(result):
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        cell = str(getattr(getattr(result, "info", None), "raw_cell", "") or "")
        if cell.lstrip().startswith("grader.check"):  # the self-checks have no tests folder while grading: not the learner's error
            return
        if error is not None and len(_CELL_ERRORS) < 20:
            count = getattr(result, "execution_count", None)
            first = (str(error).strip().splitlines() or [""])[0][:200]
            _CELL_ERRORS.append(f"{type(error).__name__}: {first}" + (f" (cell [{count}])" if count else ""))

    try:
        get_ipython().events.register("post_run_cell", after)  # noqa: F821 - defined in a Jupyter kernel
    except NameError:
        pass


def watch_cell() -> str:
    """The cell the grader puts first in a submission's copy."""
    return "from helpers.course.trusted import watch_errors as _ots_watch\n_ots_watch()"


def export_answers(spec_path: str, out_path: str, namespace: dict | None = None) -> None:
    """Run in the submission's kernel, last: write the data the tests read and the recorded probe calls
    (``namespace``: the kernel's globals by default)."""
    import contextlib
    import io

    if namespace is None:
        try:
            namespace = get_ipython().user_ns  # noqa: F821 - defined in a Jupyter kernel
        except NameError:
            import __main__

            namespace = vars(__main__)
    spec = json.loads(Path(spec_path).read_text())
    data = {name: _encoded(namespace[name]) for name in spec["data"] if name in namespace}
    calls: dict[str, list] = {name: [] for name in spec["functions"]}
    probing = dict(namespace)
    for name in spec["functions"]:
        if callable(namespace.get(name)):
            probing[name] = _Recorder(namespace[name], calls[name])
        elif name in namespace:
            data[name] = _encoded(namespace[name])  # e.g. still `...`: the checks say "not done yet"
    for code in spec["probes"].values():
        for statement in _statements(code):  # one failing probe does not stop the others
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    exec(statement, probing)  # noqa: S102 - the learner's own kernel, in the sandbox
                except BaseException:  # noqa: BLE001
                    pass
    Path(out_path).write_text(json.dumps({"data": data, "calls": calls, "errors": list(_CELL_ERRORS)}))


def _statements(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [ast.unparse(node) for node in tree.body]


def export_cell(spec_path: Path, out_path: Path) -> str:
    """The cell the grader appends to a submission's copy."""
    return (f"from helpers.course.trusted import export_answers as _ots_export\n"
            f"_ots_export({str(spec_path)!r}, {str(out_path)!r})")


# ----------------------------------------------------------------------------- in the grading process
class NotProbed(Exception):
    """The learner's function was not called with these arguments in the notebook's run."""


class Replay:
    """Stands in for a learner's function in the grading process: answers only calls the notebook made."""

    def __init__(self, name: str, calls: list):
        self.__name__ = name
        self.missed: list[str] = []  # calls the notebook never made: the kit code around them was not the kit's
        self._answers, self._after = {}, {}
        for entry in calls:
            if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], str):
                self._answers.setdefault(entry[0], entry[1])
                if len(entry) > 2:
                    self._after.setdefault(entry[0], entry[2])

    def __call__(self, *args, **kwargs):
        key = json.dumps(_plain([list(args), kwargs]), sort_keys=True)
        if key not in self._answers:
            self.missed.append(key[:200])
            raise NotProbed(f"{self.__name__} was not called with these arguments when the notebook ran")
        if key in self._after:  # the learner's function changed a list or dict it was given: so does its replay
            changed = _rebuild(self._after[key])
            if isinstance(changed, list) and len(changed) == 2 and isinstance(changed[0], list):
                for given, now in zip(args, changed[0]):
                    if isinstance(given, list) and isinstance(now, list):
                        given[:] = now
                    elif isinstance(given, dict) and isinstance(now, dict):
                        given.clear(), given.update(now)
        result = self._answers[key]
        if isinstance(result, dict) and "__raised__" in result:
            kind, message = result["__raised__"]
            raise RuntimeError(f"{kind}: {message}")
        return _rebuild(result)


class Unavailable:
    """A value the sandbox could not write as data: any use of it fails the test that needs it."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name):
        raise TypeError(f"not gradable data ({self._what})")

    def __repr__(self):
        return f"<not gradable: {self._what}>"


def _rebuild(value, depth: int = 0):
    if depth > 40:
        raise ValueError("nested too deeply")
    if isinstance(value, list):
        return [_rebuild(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and "__ellipsis__" in value:
        return ...
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(_rebuild(item, depth + 1) for item in value["__tuple__"])
    if "__dict__" in value:
        pairs = [(_rebuild(k, depth + 1), _rebuild(v, depth + 1)) for k, v in value["__dict__"]]
        return {(tuple(k) if isinstance(k, list) else k): v for k, v in pairs}
    if "__frame__" in value:
        import pandas as pd

        spec = value["__frame__"]
        frame = pd.DataFrame(_rebuild(spec["data"], depth + 1), index=_rebuild(spec["index"], depth + 1),
                             columns=_rebuild(spec["columns"], depth + 1)).infer_objects()
        frame.attrs.update(_rebuild(spec["attrs"], depth + 1))
        if spec.get("series"):
            series = frame.iloc[:, 0]
            series.attrs.update(frame.attrs)
            return series
        return frame
    if "__dataclass__" in value:
        module, qualname = value["__dataclass__"]
        if not str(module).startswith(TRUSTED_PREFIXES):
            return Unavailable(f"{module}.{qualname}")
        cls = importlib.import_module(module)
        for part in str(qualname).split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return Unavailable(f"{module}.{qualname}")
        fields = {key: _rebuild(item, depth + 1) for key, item in value["fields"].items()}
        known = {f.name: f for f in dataclasses.fields(cls)}
        instance = cls(**{k: v for k, v in fields.items() if k in known and known[k].init})
        for key, item in fields.items():
            if key in known and not known[key].init:
                object.__setattr__(instance, key, item)
        return instance
    if "__unavailable__" in value:
        return Unavailable(str(value["__unavailable__"]))
    return Unavailable("an unknown tag")


def trusted_import(module: str, attribute: str | None):
    """``from module import attribute`` (or ``import module``), as the solution wrote it: a subpackage named as an
    attribute (``from helpers import tco``) is imported if nothing imported it yet."""
    imported = importlib.import_module(module)
    if not attribute:
        return imported
    try:
        return getattr(imported, attribute)
    except AttributeError:
        return importlib.import_module(f"{module}.{attribute}")


def namespace_for(answers: dict, imports: dict[str, tuple[str, str | None]], functions: set[str], provided: dict,
                  context: dict | None = None, refused: dict | None = None) -> dict:
    """The namespace the tests run in: learner data rebuilt, kit names imported fresh, functions replayed. A measured
    ``context`` value (name -> validator) that its validator refuses is not gradable data (reason in ``refused``)."""
    namespace: dict = {}
    for name, value in answers.get("data", {}).items():
        if name in imports or name in PROVIDED:
            continue  # never the learner's binding of a kit name
        try:
            namespace[name] = _rebuild(value)
        except Exception as error:  # noqa: BLE001
            namespace[name] = Unavailable(f"{name} ({type(error).__name__}: {error})")
            continue
        if context and name in context:
            try:
                why = context[name](namespace[name])
            except Exception as error:  # noqa: BLE001 - a validator that cannot read the value refuses it
                why = f"it cannot be read ({type(error).__name__})"
            if why:
                namespace[name] = Unavailable(f"{name}: {why}")
                if refused is not None:
                    refused[name] = why
    for name, calls in answers.get("calls", {}).items():
        if name in functions and name not in namespace:
            namespace[name] = Replay(name, calls if isinstance(calls, list) else [])
    for name, (module, attribute) in imports.items():
        try:
            namespace[name] = trusted_import(module, attribute)
        except Exception:  # noqa: BLE001 - a solution import this machine lacks only fails the tests that use it
            pass
    namespace.update(provided)
    return namespace


def read_answers(path: Path) -> dict:
    """The sandbox's report, read as plain JSON (size-capped); anything else at that path (a folder, a FIFO, a link,
    a device, a huge or malformed file) counts as no answers and never blocks: opened without following links and
    without waiting, and read only if it is a regular file."""
    import os
    import stat

    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ANSWERS_BYTES:
            return {}
        data = os.read(handle, MAX_ANSWERS_BYTES + 1)
    except OSError:
        return {}
    finally:
        os.close(handle)
    try:
        answers = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return answers if isinstance(answers, dict) else {}


def score_answers(autograder: Path, answers: dict, imports, functions, provided: dict,
                  context: dict | None = None, only: set[str] | None = None) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Run every test of ``autograder`` (public and hidden) with otter's runner over the rebuilt namespace.
    Returns points per question and, per question, the public checks' one-line messages (hidden tests'
    code and output never reach a learner)."""
    import contextlib
    import io
    import tempfile

    from otter.test_files import OKTestFile

    scores: dict[str, float] = {}
    messages: dict[str, list[str]] = {}
    # one submission at a time: redirecting stdout is process-wide, and graders run submissions in threads
    with _SCORING, tempfile.TemporaryDirectory(prefix="ots-trusted-") as folder:
        with zipfile.ZipFile(autograder) as archive:
            names = [n for n in archive.namelist() if re.fullmatch(r"tests/[^/]+\.py", n)]
            archive.extractall(folder, members=names)
        for name in sorted(names):
            if only is not None and Path(name).stem not in only:  # one question at a time (the grader's time limit is per question)
                continue
            test_file = OKTestFile.from_file(str(Path(folder) / name))
            refused: dict[str, str] = {}
            namespace = namespace_for(answers, imports, functions, provided, context, refused)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                test_file.run(namespace)
            scores[test_file.name] = float(test_file.score)
            reads = {n for case in test_file.test_cases for n in free_names(case_source(case.body))} & set(refused)
            if reads:  # a measured table that is not what the lab measures: the test that reads it scores nothing
                scores[test_file.name] = 0.0
                name = sorted(reads)[0]
                messages[test_file.name] = [f"✗ {name} is not what this lab measures ({refused[name]}): run the notebook top to bottom "
                                            "without changing it"]
                continue
            replays = [value for value in namespace.values() if isinstance(value, Replay) and value.missed]
            if replays:  # e.g. the notebook patched the kit so the probes never reached the learner's function
                scores[test_file.name] = 0.0
                messages[test_file.name] = [f"{replays[0].__name__} was not called the way the checks call it when your notebook "
                                            "ran: run the notebook top to bottom without changing the kit's code"]
                continue
            said = []
            for result in test_file.test_case_results:
                if not result.passed and not result.test_case.hidden:
                    said += [line.strip() for line in str(result.message).splitlines() if line.strip().startswith("✗")]
            failed_hidden = any(not r.passed and r.test_case.hidden for r in test_file.test_case_results)
            absent = sorted(n for case in test_file.test_cases for n in free_names(case_source(case.body))
                            if n not in namespace and not hasattr(builtins, n) and not n.startswith("_"))
            if absent and not test_file.passed_all:  # the answer's name never reached the grader: say that, not "a hidden test"
                messages[test_file.name] = [f"✗ {absent[0]} was not set when your notebook ended: keep the exercise's name "
                                            "and run every cell from the top"]
            elif said:
                messages[test_file.name] = list(dict.fromkeys(said))
            elif failed_hidden:
                messages[test_file.name] = ["a hidden test failed (the public check passed: read the exercise again)"]
            elif not test_file.passed_all:
                messages[test_file.name] = ["the check did not pass"]
    return scores, messages
