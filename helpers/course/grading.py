"""Grading: the learner's exercise checks in the notebook (``make_grader``) and the instructor's
grading of a folder of submissions with otter-grader (``grade_folder``), one process group and
scratch folder per submission, timeouts from the lab's plan, a timed-out submission re-run alone."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..paths import REPO_ROOT, cache_dir
from . import trusted
from .labs import BUILD, SOLUTIONS, assign, otter_bin

class LazyGrader:
    """otter's ``Notebook`` checker, created on the first ``grader.check(...)``: importing otter takes about
    6 s, which every notebook's first cell would otherwise pay before the learner reads a line."""

    def __init__(self, tests_dir: Path):
        self._tests_dir = tests_dir
        self._notebook = None

    def _load(self):
        if self._notebook is None:
            import otter

            try:
                self._notebook = otter.Notebook(tests_dir=str(self._tests_dir))
            except Exception as error:  # noqa: BLE001 - shown to the learner with the fix
                from ..errors import InputError

                raise InputError(f"otter could not load {self._tests_dir} ({type(error).__name__}: {error})",
                                 fix="rebuild the lab (`bash kit build-labs`) or re-download it, then restart the kernel") from None
        return self._notebook

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._load(), name)

    def check(self, question: str, global_env: dict | None = None) -> "CheckResult":
        """otter's check of ``question`` against the caller's variables, shown as one line (:class:`CheckResult`)."""
        import inspect

        if global_env is None:
            global_env = inspect.currentframe().f_back.f_globals
        return CheckResult(self._load().check(question, global_env))


class CheckResult:
    """otter's result for one question, shown the way a self-check should read: "q1 passed!" or one line per failing
    public check saying what is wrong, never the check's source, its expected values or a traceback (otter's own
    display shows the whole doctest). Everything else (score, passed_all, ...) is otter's result's."""

    def __init__(self, result):
        self._result = result

    def __getattr__(self, name):
        return getattr(self._result, name)

    @property
    def lines(self) -> list[str]:
        result = self._result
        if getattr(result, "passed_all", False):
            return [f"{result.name} passed!"]
        said = []
        for case in getattr(result, "test_case_results", []):
            if case.passed:
                continue
            message = str(case.message or "")
            found = [line.strip() for line in message.splitlines() if line.strip().startswith("✗")]
            if not found:  # the check could not run at all: its last line names the exception, not the code
                tail = [line.strip() for line in message.splitlines() if re.match(r"^\s*\w+(Error|Exception|Exit|Interrupt)\b", line)]
                found = [f"✗ the check could not run: {tail[-1][:200]}" if tail else "✗ the check did not pass: run the cells above it first"]
            said += found
        return [f"{result.name}:"] + list(dict.fromkeys(said))

    def __repr__(self) -> str:
        return "\n".join(self.lines)

    def _repr_html_(self) -> str:
        import html

        lines = self.lines
        colour = "green" if len(lines) == 1 else "#b00"
        return (f"<p style='color:{colour}'><strong>{html.escape(lines[0])}</strong> "
                + " ".join(html.escape(line) for line in lines[1:]) + "</p>")


def make_grader(folder: str | Path = "."):
    """The otter checker for the exercises (``grader.check("q1")``), or None where checks cannot run.

    In ``labs/<lab>/`` the public checks live in ``tests/``; in ``solutions/`` there are none (the
    tests sit in the notebook itself) and None is returned quietly. Anywhere else the learner is
    told, in one line each, why the checks are off and what to do: nothing is swallowed. otter itself
    is imported at the first check (see :class:`LazyGrader`).
    """
    import importlib.util

    folder = Path(folder).resolve()
    if folder.name == "solutions":
        return None
    if not (folder / "tests").is_dir():
        print(f"Exercise checks are off: no tests/ folder in {folder}. Open the notebook from labs/<lab>/ "
              "(the setup cell does this on Colab), then re-run this cell.")
        return None
    if importlib.util.find_spec("otter") is None:
        print("Exercise checks are off: otter-grader is not installed. "
              "Fix: run `bash kit setup` (or `pip install 'otter-grader>=7.0,<7.1'`), then restart the kernel.")
        return None
    return LazyGrader(folder / "tests")


def autograder_zip(lab: str) -> Path:
    """The autograder zip of ``lab``, built from the solution if missing or older than it."""
    path = BUILD / f"{lab}.zip"
    if not path.exists() or path.stat().st_mtime < (SOLUTIONS / f"{lab}.ipynb").stat().st_mtime:
        tmp = Path(tempfile.mkdtemp(prefix="autograder-"))
        _, made = assign(lab, tmp)
        BUILD.mkdir(parents=True, exist_ok=True)
        shutil.copy(made, path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def question_points(lab: str) -> dict[str, float]:
    """Points per question, read from the autograder's test files."""
    points: dict[str, float] = {}
    with zipfile.ZipFile(autograder_zip(lab)) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith("tests/") and name.endswith(".py"):
                text = archive.read(name).decode()
                match = re.search(r"'points':\s*([0-9.]+)", text) or re.search(r"^points\s*=\s*([0-9.]+)", text, re.M)
                points[Path(name).stem] = float(match.group(1)) if match else 0.0
    return points


def manual_questions(lab: str) -> dict[str, float]:
    """The open-ended questions an instructor reads (otter ``manual: true``), with their points, from the solution."""
    import nbformat

    found: dict[str, float] = {}
    for cell in nbformat.read(SOLUTIONS / f"{lab}.ipynb", as_version=4).cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION") and re.search(r"^manual:\s*true", cell.source, re.M):
            name, points = re.search(r"^name:\s*(\S+)", cell.source, re.M), re.search(r"^points:\s*([0-9.]+)", cell.source, re.M)
            found[name.group(1)] = float(points.group(1)) if points else 0.0
    return found


OPEN_STUB = "_Type your answer here, replacing this text._"


def open_answers(notebook, manual: dict[str, float]) -> dict[str, int]:
    """Words the student wrote for each open-ended question (in order: the answer cells between a question's
    ``<!-- BEGIN QUESTION -->`` and ``<!-- END QUESTION -->``), 0 for a blank or untouched answer; what the gradebook
    shows so the instructor sees which answers there are to read."""
    blocks, inside, current = [], False, []
    for cell in notebook.cells:
        text = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if "<!-- BEGIN QUESTION -->" in text:
            inside, current = True, []
        if inside and "otter_answer_cell" in (cell.get("metadata", {}).get("tags") or []):
            current.append(text)
        if inside and "<!-- END QUESTION -->" in text:
            blocks.append(current)
            inside = False
    words = {}
    for name, block in zip(manual, blocks):
        text = "\n".join(block).replace(OPEN_STUB, "")
        words[name] = len(re.findall(r"[A-Za-z0-9€$%][\w.,%€$'-]*", text))
    return {name: words.get(name, 0) for name in manual}


_LAB_GRADING: dict[tuple[str, float], dict] = {}
_PROVIDED: dict[tuple[str, str], dict] = {}
_PROVIDED_LOCK = threading.Lock()


def lab_grading(lab: str) -> dict:
    """What grading ``lab`` needs from the instructor's side, read once: the sandbox's export spec, the names
    the solution imports (resolved fresh in the grading process) and the functions the exercises ask for."""
    import nbformat

    key = (lab, autograder_zip(lab).stat().st_mtime)
    if key not in _LAB_GRADING:
        solution = nbformat.read(SOLUTIONS / f"{lab}.ipynb", as_version=4)
        imports, functions = trusted.solution_bindings(solution)
        spec = trusted.grading_spec(solution, autograder_zip(lab), lab)
        _LAB_GRADING[key] = {"spec": spec, "imports": imports, "functions": functions, "provided": spec["provided"],
                             "context": {name: trusted.lab_context(lab)[name] for name in spec["context"]}}
    return _LAB_GRADING[key]


def provided_objects(lab: str, names: list[str]) -> dict:
    """The model and tokenizer the tests use, loaded here from the lab's plan (as the notebook loads them),
    once per grading process: never the submission's objects."""
    if not names:
        return {}
    plan_text = os.environ.get("OTS_PLAN", "tier=cpu")
    with _PROVIDED_LOCK:
        if (lab, plan_text) not in _PROVIDED:
            from ..models import load_model
            from ..plan import plan

            model, tokenizer = load_model(plan=plan(lab[:2], override=plan_text))
            _PROVIDED[(lab, plan_text)] = {"model": model, "tokenizer": tokenizer}
    return {name: _PROVIDED[(lab, plan_text)][name] for name in names}


@dataclass
class GradeResult:
    student: str
    scores: dict[str, float]
    total: float
    possible: float
    error: str = ""
    seconds: float = 0.0
    messages: dict[str, list[str]] | None = None  # per question: the public checks' one-line messages (never hidden test code)
    rerun: bool = False  # graded a second time, alone, after a timeout
    written: dict[str, int] | None = None  # open-ended questions: words written (0: blank), read from the submission

    def __post_init__(self):  # whatever a submission printed or raised: no key, no secret value, no control character
        self.student = printable(self.student)
        self.error = printable(redact(self.error))
        self.messages = {q: [printable(redact(m)) for m in said] for q, said in (self.messages or {}).items()}

    def feedback(self, lab: str, manual: dict[str, float]) -> str:
        """The text returned to the student: points per question, what the checks said, what a person will read."""
        lines = [f"{lab}: {self.student}", f"autograded: {self.total:g} / {self.possible:g}"]
        if self.error:
            lines.append(f"problem: {self.error}")
        for question, score in self.scores.items():
            lines.append(f"  {question}: {score:g}")
            lines += [f"      {message}" for message in (self.messages or {}).get(question, [])]
        for question, points in manual.items():
            words = (self.written or {}).get(question)
            lines.append(f"  {question}: left blank, nothing for your instructor to read ({points:g} points)" if words == 0
                         else f"  {question}: read by your instructor ({points:g} points)")
        return "\n".join(lines) + "\n"

    def to_read(self, lab: str, manual: dict[str, float]) -> str:
        """The gradebook's "to read" cell: each open-ended question, written (how many words) or blank."""
        parts = []
        for question, points in manual.items():
            words = (self.written or {}).get(question)
            state = "not found" if words is None else "blank" if words == 0 else f"written, {words} words"
            parts.append(f"{question} ({points:g} pts, {state}; rubric in solutions/{lab}.ipynb)")
        return "; ".join(parts)


# the only variables of the grading process a submission's kernel sees: locale, threads, CPU features and the kit's
# plan. Nothing else crosses (API keys, tokens, cloud credentials, the instructor's paths): the sandbox gets its own
# HOME, TMPDIR and caches in its scratch folder
SANDBOX_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY",
               "CUDA_VISIBLE_DEVICES", "OTS_PLAN", "OTS_SIMULATE_GPU", "OTS_QUICK")
KEY_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|gh[pousr]_[A-Za-z0-9]{8,}|AKIA[0-9A-Z]{12,}|xox[abpr]-[A-Za-z0-9\-]{8,}"
                        r"|AIza[0-9A-Za-z_\-]{20,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})")


def threads_per_worker(workers: int) -> int:
    """The CPU threads each of ``workers`` submissions graded side by side may use: the cores shared out. Two kernels
    each using every core fight over them: on 2 cores two quick Lab 03 runs side by side took 336 s each, against 68 s
    for one alone (2026-12-07)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def sandbox_env(scratch: Path, home: Path, threads: int | None = None) -> dict[str, str]:
    """The submission kernel's whole environment: the allow-listed variables of this process, and the kit's settings
    pointing into the submission's scratch folder. ``threads``: the CPU threads its libraries may use (OMP_NUM_THREADS,
    unless the grader set it)."""
    env = {name: os.environ[name] for name in SANDBOX_ENV if name in os.environ}
    if threads and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(MPLBACKEND="Agg", OTS_PLAN=os.environ.get("OTS_PLAN", "tier=cpu"), HOME=str(home), TMPDIR="/tmp",
               OTS_CACHE=str(cache_dir()), OTS_RESULTS=str(home / "results.json"), OTS_LEDGER=str(home / "ledger.csv"),
               XDG_CACHE_HOME=str(home / ".cache"), MPLCONFIGDIR=str(home / ".mpl"), HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1",
               OTS_GRADING="1")  # interactive widgets draw once, statically: widget messages have stalled grading kernels
    return env


# values of the grading process's environment a gradebook may show as they are: what the sandbox passes on anyway and
# what says nothing about the instructor (paths of the system, the kit's plan)
HARMLESS = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "SHELL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OTS_PLAN",
            "ATEN_CPU_CAPABILITY", "MPLBACKEND", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED", "SHLVL", "_", "PWD", "OLDPWD"}


def secret_values() -> list[str]:
    """Every value the grading process holds that a submission could try to smuggle out: its environment's values
    (whatever their names: a secret need not be called KEY) and the values of the kit's ``.env`` file, longest first."""
    values = {value for name, value in os.environ.items()  # a folder of this machine (PYENV_ROOT) is no secret
              if name not in HARMLESS and len(value) >= 8 and not value.replace(".", "").isdigit()
              and not (value.startswith("/") and os.path.exists(value))}
    for name in SECRET_FILES[:2]:
        try:
            for line in (REPO_ROOT / name).read_text(errors="replace").splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    value = line.split("=", 1)[1].strip().strip("'\"")
                    if len(value) >= 6:
                        values.add(value)
        except OSError:
            continue
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with anything shaped like a key, and every value of this process's environment and of the kit's
    ``.env`` (:func:`secret_values`), replaced."""
    text = KEY_SHAPES.sub("[redacted]", str(text))
    for value in secret_values():
        if value in text:
            text = text.replace(value, "[redacted]")
    return text


def csv_cell(value) -> str | float:
    """A gradebook cell that a spreadsheet shows as text: never a formula (=, +, -, @, tab, CR at the start)."""
    if isinstance(value, (int, float)):
        return value
    text = printable(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


SANDBOX_FIX = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; it needs Linux user or root namespaces), "
               "or grade in otter's Docker containers (otter grade); --no-sandbox grades without one, for trusted notebooks only")


def sandbox_available() -> bool:
    """Whether submissions can be graded in a bubblewrap sandbox on this machine (Linux, bwrap installed and allowed)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    probe = subprocess.run([bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def _hidden_roots(hide: list[Path]) -> list[Path]:
    """Folders whose contents a submission must not see: every home, the temporary folders, the repository's history,
    the solutions, built autograders, gradebooks and the class's notebooks. The sandbox binds none of them; those that
    lie inside what it does bind (the kit's .git and solutions, a class folder kept in the kit) are emptied there."""
    roots = [Path("/tmp"), Path("/dev/shm"), Path("/var/tmp"), Path("/home"), Path("/root"), Path.home(), Path(tempfile.gettempdir()),
             REPO_ROOT / ".git", SOLUTIONS, BUILD, REPO_ROOT / "grades", *hide]
    seen, found = set(), []
    for root in roots:
        try:
            path = Path(root).resolve()
        except OSError:
            continue
        if path.is_dir() and path != Path("/") and path not in seen:
            seen.add(path)
            found.append(path)
    return sorted(found, key=lambda p: len(p.parts))  # outer folders first: an inner one is hidden again inside them


def _needed_paths() -> set[Path]:
    """What a submission's kernel reads that may sit under a hidden folder: the kit, its Python (the virtual
    environment and the interpreter it was made from), the kit's model cache and the Hugging Face cache."""
    import sys

    paths = {REPO_ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent.parent, cache_dir()}
    try:
        from huggingface_hub import constants

        paths.add(Path(constants.HF_HUB_CACHE))
    except Exception:  # noqa: BLE001 - without the hub library there is no hub cache to bind
        pass
    return {Path(p).resolve() for p in paths}


# what of the machine a submission's kernel sees, read-only: the system's programs and libraries, the few files of /etc
# a Python and its libraries read, then (see _needed_paths) the kit, its Python and the model caches. Nothing else is
# there: no home, no /run (no host socket: docker.sock, PostgreSQL, D-Bus), no /etc/shadow, no other copy of the kit
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf", "localtime", "timezone",
             "ssl", "ca-certificates", "pki", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts",
             "mime.types", "os-release", "debian_version", "machine-id")
SANDBOX_UID = 65534  # nobody: a root grader's submissions run as this user, with no owner rights on anything outside
TMPFS_BYTES = 512 * 2**20  # each of /var/tmp and /dev/shm in the sandbox (RAM-backed, so bounded)
# the sandbox's /tmp: Lab 03 writes its merged fp32 export there (542 MB for the CPU tier's 135M model) before keeping it
TMP_BYTES = 1536 * 2**20
SECRET_FILES = (".env", ".env.local", ".netrc", ".pgpass")


def sandbox_prefix(scratch: Path, work: Path, hide: list[Path] = ()) -> list[str]:
    """bubblewrap arguments for one submission, built from an allow-list: the system's programs and libraries and a
    few files of /etc, the kit (without its history, solutions, built autograders, gradebooks and secret files), its
    Python and the model caches, all read-only; its scratch folder the only writable place; RAM-backed folders sized
    (TMPFS_BYTES); no network, its own PID, IPC and UTS namespaces (every process it starts dies with it). A root grader's
    submission then runs as ``nobody`` (setpriv, every capability and the bounding set dropped, no new privileges): a
    fresh, unprivileged user with no owner rights on the host's files."""
    args = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--new-session", "--dev", "/dev", "--proc", "/proc"]
    for folder in ("/etc", "/var"):  # made here, traversable (bubblewrap would make them 0700: closed to the sandbox's user)
        args += ["--perms", "0755", "--dir", folder]
    for folder in SYSTEM_DIRS:
        path = Path(folder)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--size", str(TMP_BYTES if folder == "/tmp" else TMPFS_BYTES), "--tmpfs", folder]
    needed = sorted({p for p in _needed_paths() if p.exists()}, key=lambda p: len(p.parts))
    # the folders above what is bound, made traversable (bubblewrap would make them 0700: closed to the sandbox's user)
    parents = sorted({parent for path in [*needed, scratch] for parent in Path(path).parents
                      if parent != Path("/") and not any(parent.is_relative_to(folder) for folder in ("/usr", "/tmp"))},
                     key=lambda p: len(p.parts))
    for parent in parents:
        args += ["--perms", "0755", "--dir", str(parent)]
    for path in needed:
        if not any(path.is_relative_to(outer) and path != outer for outer in needed):
            args += ["--ro-bind", str(path), str(path)]
    for path in _hidden_roots(hide):  # inside what was bound (the kit's .git and solutions live in the repository)
        if any(path.is_relative_to(back) for back in needed):
            args += ["--tmpfs", str(path)]
    for back in needed:
        for name in SECRET_FILES:
            if (back / name).is_file():
                args += ["--ro-bind", "/dev/null", str(back / name)]
    args += ["--bind", str(scratch), str(scratch), "--chdir", str(work)]
    if os.geteuid() == 0:
        tool = shutil.which("setpriv")
        if tool is None:
            args += ["--cap-drop", "ALL"]
        else:
            args += [tool, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--inh-caps=-all",
                     "--bounding-set=-all", "--no-new-privs", "--"]
    return args


def hand_over(scratch: Path) -> None:
    """A root grader's scratch folder, given to the sandbox's unprivileged user (it writes its answers and output there)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return
    for folder, _, files in os.walk(scratch):
        os.chown(folder, SANDBOX_UID, SANDBOX_UID)
        for name in files:
            os.chown(os.path.join(folder, name), SANDBOX_UID, SANDBOX_UID, follow_symlinks=False)


# Per-submission limits (besides the time limit): each process of the sandbox may map at most its share of this machine's
# memory (a runaway allocation is a MemoryError in the notebook, not a machine that swaps the class to a halt), write
# files of at most MAX_FILE_BYTES, and the sandbox may hold at most MAX_PROCESSES processes (threads not counted)
MAX_PROCESSES = 200
MAX_FILE_BYTES = 4 * 2**30
MIN_MEMORY_BYTES = 4 * 2**30


def memory_limit_bytes(workers: int = 2) -> int:
    """The address space one sandboxed process may map: 80 % of this machine's memory shared by the workers, at least
    4 GiB (the CPU tier's kernels peak near 2.3 GB of address space)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30
    return max(MIN_MEMORY_BYTES, int(0.8 * total / max(1, workers)))


def limits_prefix(memory_bytes: int) -> list[str]:
    """``prlimit`` (util-linux) in front of the sandbox: every process it starts inherits the limits."""
    tool = shutil.which("prlimit")
    if tool is None:
        return []
    return [tool, f"--as={memory_bytes}", f"--fsize={MAX_FILE_BYTES}", "--core=0", "--"]


def _descendants(pid: int) -> int:
    """How many processes descend from ``pid`` (read from /proc; threads are not processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", "replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    count, todo = 0, list(children.get(pid, []))
    while todo:
        current = todo.pop()
        count += 1
        todo.extend(children.get(current, []))
    return count


MAX_SCRATCH_BYTES = 2 * 2**30  # all a submission may write to its scratch folder (its working folder and home)
MAX_SCRATCH_FILES = 20_000


def scratch_usage(folder: Path, stop_after: int = MAX_SCRATCH_FILES + 1) -> tuple[int, int]:
    """(bytes, files) under ``folder``, links not followed; counting stops past ``stop_after`` files."""
    total, count = 0, 0
    stack = [str(folder)]
    while stack and count < stop_after:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    count += 1
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total, count


def _wait(process: subprocess.Popen, timeout_s: float, max_processes: int = MAX_PROCESSES,
          scratch: Path | None = None) -> tuple[str, str | None]:
    """Wait for the sandbox with its time limit, counting its processes (and what it wrote to ``scratch``) on the way:
    (output, why it was stopped or None)."""
    collected: list[str] = []
    reader = threading.Thread(target=lambda: collected.append(process.stdout.read() if process.stdout else ""), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    next_disk = time.monotonic()
    why = None
    while process.poll() is None:
        if time.monotonic() > deadline:
            why = f"timed out after {timeout_s:.0f} s"
            break
        if _descendants(process.pid) > max_processes:
            why = f"stopped: the notebook started more than {max_processes} processes (the sandbox's limit)"
            break
        if scratch is not None and time.monotonic() >= next_disk:
            written, files = scratch_usage(scratch)
            if written > MAX_SCRATCH_BYTES or files > MAX_SCRATCH_FILES:
                why = (f"stopped: the notebook wrote more than {MAX_SCRATCH_BYTES // 2**30} GiB or {MAX_SCRATCH_FILES:,} "
                       "files (the sandbox's limit)")
                break
            next_disk = time.monotonic() + 1.0
        time.sleep(0.2)
    if why:
        _kill_tree(process)
    process.wait()
    reader.join(timeout=10)
    return "".join(collected), why


def _kill_tree(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


MAX_SUBMISSION_BYTES = 50_000_000


def grade_one(submission: Path, lab: str, timeout_s: float = 300.0, sandbox: bool = True, hide: list[Path] = (),
              student: str | None = None, scorer: "Scorer | None" = None, memory_bytes: int | None = None,
              threads: int | None = None) -> GradeResult:
    """Grade one notebook (see :func:`_grade_one`), with the words written for each open-ended question (counted from
    the notebook as read for grading; none for a file that was never read as one)."""
    counted: dict = {}
    result = _grade_one(submission, lab, timeout_s, sandbox, hide, student, scorer, memory_bytes, counted, threads)
    result.written = counted.get("written", {})
    return result


def _grade_one(submission: Path, lab: str, timeout_s: float = 300.0, sandbox: bool = True, hide: list[Path] = (),
               student: str | None = None, scorer: "Scorer | None" = None, memory_bytes: int | None = None,
               counted: dict | None = None, threads: int | None = None) -> GradeResult:
    """Grade one notebook with ``otter run`` in its own process group, in a scratch folder, inside a
    bubblewrap sandbox (see :func:`sandbox_prefix`; ``sandbox=False`` only for trusted notebooks).

    The submission runs on a copy in a temporary folder (its working directory), so a notebook
    that deletes files in its folder deletes only its copy; one that loops is killed at
    ``timeout_s`` with its kernel; one that crashes gets zero and its error is recorded.
    """
    import nbformat

    points = question_points(lab)
    student = student or submission.stem
    possible = sum(points.values())
    start = time.perf_counter()
    if submission.is_symlink() or not submission.is_file() or submission.stat().st_size > MAX_SUBMISSION_BYTES:
        # a link could point at the instructor's files (read here, outside the sandbox); a FIFO would block the class
        kind = ("a link (never followed)" if submission.is_symlink() else "a folder named like a notebook" if submission.is_dir()
                else "a special file (a pipe or a device)" if not submission.is_file()
                else f"over {MAX_SUBMISSION_BYTES // 1_000_000} MB")
        return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, f"not a notebook file: {kind}", 0.0)
    try:
        notebook = nbformat.read(submission, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # noqa: BLE001 - any unreadable file is one readable line in the gradebook
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, f"not a valid notebook: {reason}"[:300],
                           time.perf_counter() - start)
    if counted is not None:
        counted["written"] = open_answers(notebook, manual_questions(lab))
    # a short name of our own: a student's file name may be long or hold any bytes
    scratch = Path(tempfile.mkdtemp(prefix="grade-"))
    try:
        # the notebook's working folder holds only its own copy; the public-only autograder, the export spec and
        # the results sit beside it, out of reach of a notebook that empties its folder. Hidden tests never enter.
        work = scratch / "work"
        work.mkdir()
        spec_path, answers_path = scratch / "spec.json", scratch / "answers" / "answers.json"
        answers_path.parent.mkdir()
        grading = lab_grading(lab)
        spec_path.write_text(json.dumps(grading["spec"]))
        # the lab being graded names the assignment where the notebook does not (the instructor's own solution has no
        # otter metadata), and the kit's kernel runs it whatever kernel the notebook names
        notebook.metadata.setdefault("otter", {}).setdefault("assignment_name", lab)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        notebook.cells.insert(0, nbformat.v4.new_code_cell(trusted.watch_cell()))
        notebook.cells.append(nbformat.v4.new_code_cell(trusted.export_cell(spec_path, answers_path)))
        nbformat.write(notebook, work / "submission.ipynb")
        trusted.public_autograder(autograder_zip(lab), scratch / "autograder.zip")
        (scratch / "out").mkdir()
        home = scratch / "home"
        home.mkdir()
        # the kernel's home, results store and ledger are in the scratch folder; the model cache is read where it is;
        # of this process's environment only the allow-listed variables cross (SANDBOX_ENV)
        env = sandbox_env(scratch, home, threads)
        command = [otter_bin(), "run", "-a", str(scratch / "autograder.zip"), "-o", str(scratch / "out"), str(work / "submission.ipynb")]
        if sandbox:
            command = limits_prefix(memory_bytes or memory_limit_bytes()) + sandbox_prefix(scratch, work, hide) + command
            hand_over(scratch)
        process = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env=env)
        output, stopped = _wait(process, timeout_s, scratch=scratch)
        _kill_tree(process)  # the kernel and anything the notebook started
        if stopped:
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, stopped, time.perf_counter() - start)
        if not (scratch / "out" / "results.json").exists() and "DeadKernelError" in output:
            limit = memory_bytes or memory_limit_bytes()
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible,
                               "kernel died: the notebook ended its own Python process (os._exit, a crash, or more memory than "
                               f"the sandbox's {limit / 2**30:.0f} GiB per process)", time.perf_counter() - start)
        # read and scored outside the sandbox by the kit's own unpatched code, in a process of its own with a time limit
        # (scorer): whatever the submission left at its answers path costs only this submission
        answers, found, messages, problem = (scorer or Scorer(lab)).score(answers_path)
        if problem and not answers:
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible, problem, time.perf_counter() - start)
        tampered = answers_path.is_symlink() or (answers_path.exists() and not answers_path.is_file()) or (
            answers_path.is_file() and answers_path.stat().st_size > 0)
        if not answers and tampered:  # something sits where the grader saves the answers, and it is not them
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible,
                               "the answers the grader saves when the notebook ends could not be read: a cell wrote over, "
                               "replaced or damaged them (a folder, a link or other bytes in their place)",
                               time.perf_counter() - start)
        if not answers:
            last = " | ".join(line for line in output.strip().splitlines()[-3:])
            return GradeResult(student, {q: 0.0 for q in points}, 0.0, possible,
                               f"grading failed: the notebook did not run to its end ({last})"[:500], time.perf_counter() - start)
        scores = {q: found.get(q, 0.0) for q in points}
        errors = [str(e) for e in answers.get("errors", []) if isinstance(e, str)] if isinstance(answers.get("errors"), list) else []
        error = ("a cell raised " + "; then ".join(errors[:2]) + (f" (and {len(errors) - 2} more)" if len(errors) > 2 else "")
                 if errors else "")
        messages = {q: [m[:300] for m in said] for q, said in messages.items()}
        error = "; ".join(part for part in (problem, error) if part)  # a question the grader could not finish: named first
        return GradeResult(student, scores, sum(scores.values()), possible, error[:300], time.perf_counter() - start, messages)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# a submission may take this many times the plan's expected minutes before it is stopped; a busy grading
# machine (other workers, other jobs) is why the factor is generous, and why a timeout is retried alone
TIMEOUT_SAFETY = 4.0
MIN_TIMEOUT_S = 120.0
RETRY_FACTOR = 2.0


def default_timeout_s(lab: str) -> float:
    """Seconds one submission of ``lab`` may run: the CPU-tier plan's expected time x TIMEOUT_SAFETY
    (plus a minute for the kernel and otter), at least MIN_TIMEOUT_S."""
    from ..hardware import cpu_hardware
    from ..plan import plan

    expected = plan(lab[:2], cpu_hardware(), override="tier=cpu").expected_minutes * 60
    return max(MIN_TIMEOUT_S, expected * TIMEOUT_SAFETY + 60)


def grade_folder(folder: Path, lab: str, out_csv: Path | None = None, timeout_s: float | None = None, workers: int = 2,
                 sandbox: bool = True) -> Path:
    """Grade every ``*.ipynb`` in ``folder`` into a CSV: student, points per question, total, error, rerun.

    Submissions are graded ``workers`` at a time. One that times out is graded again, alone, with
    RETRY_FACTOR x the timeout before a timeout is recorded (a busy machine must not turn a correct
    notebook into a zero); the ``rerun`` column says which ones needed it.
    """
    folder = Path(folder)
    # every notebook below the folder, named by its path inside it: two "alice.ipynb" in different subfolders are two rows
    # every path named *.ipynb gets a row, a folder or a link included (they get one line saying what they are)
    submissions = sorted((p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts),
                         key=lambda p: os.fsencode(p))
    names = [student_name(p, folder) for p in submissions]
    if not submissions:
        from ..errors import InputError

        raise InputError(f"no .ipynb files in {folder}", fix="point at the folder holding the submitted notebooks")
    if sandbox and not sandbox_available():
        from ..errors import InputError

        raise InputError("submissions cannot be sandboxed on this machine (bubblewrap is missing or not allowed)", fix=SANDBOX_FIX)
    timeout_s = timeout_s or default_timeout_s(lab)
    out_csv = Path(out_csv or REPO_ROOT / "grades" / f"{lab}.csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    autograder_zip(lab)  # build once before the workers start
    hide = [folder.resolve(), out_csv.parent.resolve()]  # other students' notebooks and the gradebook
    scorer = scorer_for(lab)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        memory = memory_limit_bytes(workers)
        results = list(pool.map(lambda pair: grade_one(pair[0], lab, timeout_s, sandbox, hide, pair[1], scorer, memory,
                                                       threads_per_worker(workers)),
                                zip(submissions, names)))
    results = _rerun_timeouts(submissions, results, lab, timeout_s, sandbox, hide, scorer, workers)
    reruns = {r.student: f"timed out after {timeout_s:.0f} s; re-run alone" for r in results if getattr(r, "rerun", False)}
    questions = list(question_points(lab))
    # open-ended answers are read by a person against the rubric in the solution notebook: named, never scored here
    manual = manual_questions(lab)
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *questions, "total", "possible", "error", "rerun", "seconds", "to read"])
        for r in results:
            writer.writerow([csv_cell(v) for v in (r.student, *[r.scores[q] for q in questions], r.total, r.possible, r.error,
                                                   reruns.get(r.student, ""), round(r.seconds, 1), r.to_read(lab, manual))])
    # one feedback file per student, to hand back: points, the checks' messages, the questions a person will read;
    # the folder holds this run's files only
    feedback_dir = out_csv.parent / f"{out_csv.stem}-feedback"
    if feedback_dir.is_dir():
        shutil.rmtree(feedback_dir)
    feedback_dir.mkdir()
    for r in results:
        (feedback_dir / feedback_name(r.student)).write_text(r.feedback(lab, manual), encoding="utf-8")
    return out_csv


def _rerun_timeouts(submissions, results, lab, timeout_s, sandbox, hide, scorer, workers) -> list:
    """Each submission that timed out, graded again alone with RETRY_FACTOR x the time (marked ``rerun``)."""
    results = list(results)
    for index, (path, first) in enumerate(zip(submissions, results)):
        if first.error.startswith("timed out"):
            again = grade_one(path, lab, timeout_s * RETRY_FACTOR, sandbox, hide, first.student, scorer, memory_limit_bytes(1),
                              threads_per_worker(1))
            if again.error.startswith("timed out"):
                again.error = f"timed out twice: after {timeout_s:.0f} s with {workers} at a time, then {timeout_s * RETRY_FACTOR:.0f} s alone"
            again.rerun = True
            results[index] = again
    return results


# how long scoring one submission's answers may take in the scoring process (it is a few dozen test cases over plain
# data: well under a second; a value that makes a test's computation loop is cut off here), and its start-up
SCORE_TIMEOUT_S = 60.0
SCORER_STARTUP_S = 180.0
SCORER_MEMORY_BYTES = 3 * 2**30  # the scoring process (the lab's model included) stays far below; a flood of answers does not


def _rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except Exception:  # noqa: BLE001 - a process that is gone uses nothing
        return 0


class Scorer:
    """Reads and scores submissions' answers in a process of its own, started once per grading run: it imports otter,
    loads the lab's provided model and **warms** the checks (a check's first call can cost tens of seconds: Lab 00's
    greedy reply) before any clock starts. Each question is scored on its own, with its own time limit: a question
    that runs past it is retried once, in a fresh warm process, with RETRY_FACTOR x the time, as the sandbox retries a
    notebook; one that still does not finish scores 0 with a message that blames the grader's time, never the answer,
    and the gradebook flags it for a re-grade. A crash costs only that question."""

    def __init__(self, lab: str, timeout_s: float = SCORE_TIMEOUT_S, delays: dict[str, float] | None = None):
        self.lab, self.timeout_s = lab, timeout_s
        self.delays = dict(delays or {})  # a test's seam: seconds the scoring process waits before scoring a question
        self._process = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._requests, self._replies = context.Queue(), context.Queue()
        self._process = context.Process(target=_scoring_process, args=(self.lab, os.environ.get("OTS_PLAN", "tier=cpu"),
                                                                        self._requests, self._replies, self.delays), daemon=True)
        self._process.start()
        try:
            ready = self._replies.get(timeout=SCORER_STARTUP_S)
        except Exception:  # noqa: BLE001 - queue.Empty, or a process that died while starting
            ready = "the scoring process did not start"
        if ready != "ready":
            self.close()
            raise RuntimeError(str(ready))

    def _ask(self, request, timeout_s: float):
        """Send one request to a warm process and wait; ("timeout", None) or ("crash", name) or ("ok", reply)."""
        import queue

        if self._process is None or not self._process.is_alive():
            self._start()  # set-up and warm-up happen here, before the question's clock
        self._requests.put(request)
        deadline = time.monotonic() + timeout_s
        while True:  # wait in short steps, watching the scoring process's memory (a huge answers file must not swamp it)
            try:
                return "ok", self._replies.get(timeout=min(0.25, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    self.close()
                    return "timeout", None
                if _rss_bytes(self._process.pid) > SCORER_MEMORY_BYTES:
                    self.close()
                    return "crash", f"more than {SCORER_MEMORY_BYTES // 2**30} GiB of memory"
                if not self._process.is_alive():
                    self.close()
                    return "crash", "the scoring process ended"
            except Exception as error:  # noqa: BLE001 - the process died mid-way (out of memory, a crash)
                self.close()
                return "crash", type(error).__name__

    def score(self, answers_path: Path) -> tuple[dict, dict, dict, str]:
        """(answers, points per question, messages per question, problem): problem is "" when scoring ran; a question
        the grader could not finish in time is named there for a re-grade (its message tells the student so)."""
        with self._lock:  # one submission at a time: scoring takes a second or two
            try:
                status, reply = self._ask(("read", str(answers_path)), self.timeout_s)
            except RuntimeError as error:
                return {}, {}, {}, f"scoring failed: {error}"[:300]
            if status != "ok":
                return {}, {}, {}, ("the answers file could not be read in time (the notebook left an oversized or "
                                    "malformed answers file)" if status == "timeout" else
                                    f"the answers file could not be read (the scoring process stopped: {reply})")
            answers, problem = reply
            if problem or not answers:
                return answers or {}, {}, {}, problem
            found, messages, slow = {}, {}, []
            for question in question_points(self.lab):
                for attempt, limit in enumerate((self.timeout_s, self.timeout_s * RETRY_FACTOR)):
                    try:
                        status, reply = self._ask(("score", str(answers_path), question), limit)
                    except RuntimeError as error:
                        status, reply = "crash", str(error)
                    if status == "ok":
                        points, said = reply
                        found.update(points)
                        messages.update(said)
                        break
                    if status == "crash":
                        messages[question] = ["the grader's scoring process failed on this question; your instructor will "
                                              "look at it (this is not a verdict on your answer)"]
                        slow.append(f"{question} (scoring stopped: {reply})")
                        break
                else:
                    messages[question] = [f"the grader ran out of time scoring this question twice ({self.timeout_s:.0f} s, "
                                          f"then {self.timeout_s * RETRY_FACTOR:.0f} s); your instructor will re-grade it "
                                          "(this is the grading machine's time, not a verdict on your answer)"]
                    slow.append(f"{question} (grader out of time)")
            problem = ("re-grade " + ", ".join(slow)) if slow else ""
            return answers, found, messages, problem

    def close(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=10)
            self._process = None


_SCORERS: dict[tuple[str, str, float], Scorer] = {}


def scorer_for(lab: str) -> Scorer:
    """This process's scorer for ``lab`` (and the plan in OTS_PLAN), started on first use and kept for the next class:
    starting one costs a Python with otter (and the lab's model, where its tests use one). Stopped at exit."""
    import atexit

    key = (lab, os.environ.get("OTS_PLAN", "tier=cpu"), autograder_zip(lab).stat().st_mtime)  # a rebuilt lab: a new scorer
    if key not in _SCORERS:
        _SCORERS[key] = Scorer(lab)
        atexit.register(_SCORERS[key].close)
    return _SCORERS[key]


def _warm_checks(lab: str, provided: dict) -> None:
    """Call the lab's check module's ``warm`` (where it has one) with the provided objects: what a check computes once
    per process (a greedy reply) is computed before the first question's clock starts."""
    import importlib

    try:
        module = importlib.import_module(f"helpers.course.checks.lab{lab[:2]}")
    except ImportError:
        return
    if hasattr(module, "warm"):
        module.warm(**provided)


def _scoring_process(lab: str, plan_text: str, requests, replies, delays: dict | None = None) -> None:
    """The scoring process: set up and warm up once, then answer requests: ("read", path) -> (answers, problem) and
    ("score", path, question) -> (points, messages) for that question alone."""
    try:
        os.environ["OTS_PLAN"] = plan_text
        grading = lab_grading(lab)
        provided = provided_objects(lab, grading["provided"])
        autograder = autograder_zip(lab)
        _warm_checks(lab, provided)
        trusted.score_answers(autograder, {}, grading["imports"], grading["functions"], provided, grading["context"])  # otter's runner, once
    except BaseException as error:  # noqa: BLE001 - reported to the grader, which records it per submission
        replies.put(f"the scoring process could not start ({type(error).__name__}: {error})"[:300])
        return
    replies.put("ready")
    answers_by_path: dict[str, dict] = {}
    while True:
        request = requests.get()
        if request is None:
            return
        kind, path = request[0], request[1]
        try:
            if kind == "read":
                answers_by_path.clear()
                answers_by_path[path] = trusted.read_answers(Path(path))
                replies.put((answers_by_path[path], ""))
                continue
            question = request[2]
            if (delays or {}).get(question):
                time.sleep(delays[question])
            answers = answers_by_path.get(path)
            if answers is None:
                answers = answers_by_path[path] = trusted.read_answers(Path(path))
            replies.put(trusted.score_answers(autograder, answers, grading["imports"], grading["functions"], provided,
                                              grading["context"], only={question}))
        except BaseException as error:  # noqa: BLE001 - one submission's problem, never the class's
            if kind == "read":
                replies.put(({}, f"the answers file could not be read ({type(error).__name__})"))
            else:
                replies.put(({request[2]: 0.0}, {request[2]: ["this answer could not be scored (the checks raised "
                                                              f"{type(error).__name__}): look at its type"]}))


def student_name(path: Path, folder: Path) -> str:
    """A submission's name in the gradebook: its path inside the class folder without ``.ipynb``, printable whatever
    bytes the file name holds (undecodable bytes are shown as \\xNN)."""
    relative = path.relative_to(folder).with_suffix("").as_posix()
    return os.fsencode(relative).decode("utf-8", "backslashreplace")


def feedback_name(student: str) -> str:
    """The feedback file for ``student``: one flat, safe, unique name (subfolders joined with "__", at most 120 characters,
    a short hash keeping long or odd names apart)."""
    import hashlib

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", student.replace("/", "__")).strip("._") or "submission"
    # a name that was changed on the way (a subfolder, an odd byte) or that could be mistaken for one that was ("__")
    # gets its hash: section1/alice and section1__alice never share a file
    if safe != student or "__" in student or len(safe) > 120:
        safe = f"{safe[:100]}-{hashlib.sha1(student.encode('utf-8', 'backslashreplace')).hexdigest()[:8]}"
    return f"{safe}.txt"


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` without control characters (terminal escape sequences, bidirectional overrides): what a gradebook cell
    or a feedback line shows is what it holds. Newlines and tabs become spaces."""
    text = str(text).replace("\n", " ").replace("\t", " ").replace("\r", " ")
    text = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\\\)?", "", text)  # CSI and OSC sequences whole
    return CONTROL.sub("", text)


def guess_lab(folder: Path) -> tuple[str | None, str]:
    """The lab a class folder holds, never decided by one submission: the folder's own name where it is a lab's name,
    else the assignment the notebooks declare, where one name leads every other by at least two notebooks. Links are
    never followed, oversized files never read, and a damaged or absurdly nested file counts for nothing.
    Returns (lab or None, why)."""
    from collections import Counter

    folder = Path(folder)
    labs = set(lab_names_available())
    for part in (folder.resolve().name, folder.name):
        if part in labs:
            return part, f"the class folder is named {part}"
    votes: Counter = Counter()
    for path in folder.rglob("*.ipynb"):
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_SUBMISSION_BYTES:
            continue
        try:
            name = json.loads(path.read_text()).get("metadata", {}).get("otter", {}).get("assignment_name")
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError, OSError):
            continue
        if isinstance(name, str) and name in labs:
            votes[name] += 1
    ranked = votes.most_common(2)
    if not ranked:
        return None, "no notebook declares a lab"
    if len(ranked) == 1 and ranked[0][1] >= 2 or len(ranked) == 2 and ranked[0][1] - ranked[1][1] >= 2:
        return ranked[0][0], f"{ranked[0][1]} notebooks declare {ranked[0][0]}"
    return None, "the notebooks do not agree on one lab: " + ", ".join(f"{n} x {lab}" for lab, n in ranked)


def lab_names_available() -> list[str]:
    from .labs import lab_names

    return lab_names()

