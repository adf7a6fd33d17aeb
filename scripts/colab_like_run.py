"""A Colab-like run, recorded: each lab's first cells, executed as a Colab learner would run them.

Run it with a Python that has Colab's packages and nothing of the kit (what `bash kit test` builds in .venv-3.13
holds the kit too, so make a fresh one; INSTRUCTORS.md, "Colab as it is", gives the commands). A fake `google.colab`
module makes the setup cell take its Colab branch for real: it clones this repository (its committed state) into a
scratch folder and runs scripts/colab_install.sh with this Python, printing how long the install took. Then each lab
runs its setup cell and the code cells after it, up to ``--cells`` code cells, on the CPU (no GPU here). Prints one
line per lab and exits non-zero if any cell failed.

    python scripts/colab_like_run.py [--cells 3] [--labs 00_first_open_model ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3, help="code cells per lab, the setup cell included")
    parser.add_argument("--labs", nargs="*", default=None)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="ots-colab-like-"))
    fake = scratch / "fake_modules" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (scratch / "content").mkdir()
    os.environ.update(PYTHONPATH=str(scratch / "fake_modules"), OTS_COLAB_ROOT=str(scratch / "content"), OTS_REPO_URL=str(ROOT),
                      OTS_PLAN=os.environ.get("OTS_PLAN", "tier=cpu"), HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
                      OTS_RESULTS=str(scratch / "results.json"), OTS_LEDGER=str(scratch / "claims_ledger.csv"),
                      PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    labs = args.labs or sorted(p.name for p in (ROOT / "labs").iterdir() if p.is_dir() and p.name[:2].isdigit())
    print(f"Python {sys.version.split()[0]}; " + ", ".join(f"{name} {_version(name)}" for name in
          ("torch", "transformers", "peft", "accelerate", "ipywidgets", "notebook", "numpy", "pandas", "openai")))
    failed = 0
    for lab in labs:
        nb = nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", as_version=4)
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"][: args.cells]
        nb.cells = [nb.cells[i] for i in code]
        # Colab imports google.colab before any cell runs
        nb.cells.insert(0, nbformat.v4.new_code_cell("import google.colab"))
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(scratch)}})
        try:
            client.execute()
            status = "ok"
        except Exception as error:  # a cell failed: say which, keep going with the other labs
            failed += 1
            status = f"FAILED: {str(error).strip().splitlines()[-1][:200]}"
        outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream")
        installed = [line for line in outputs.splitlines() if line.startswith("[kit] installed the kit in")]
        print(f"{lab}: {len(code)} code cells in {time.perf_counter() - start:.0f} s: {status}"
              + (f"  ({installed[0][6:installed[0].index(';')]})" if installed else ""))
    return 1 if failed else 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


if __name__ == "__main__":
    sys.exit(main())
