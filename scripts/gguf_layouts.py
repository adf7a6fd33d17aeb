"""Which GGUF types keep Lab 03's tuning: the tuned CPU-tier model (Lab 03's merged folder from your results store)
written at every type the kit writes (Q8_0, Q5_1, Q4_1, Q4_0), each file loaded back and asked ``--rows`` held-out
test rows, its triage compared with the tuned model's own; and, over every weight matrix, what each type's rounding
keeps of the tuning. Writes ``datasets/results/gguf_layouts.csv`` (whose run: this machine, dated).

    .venv/bin/python scripts/gguf_layouts.py --rows 32          # after Lab 03 has run (its merged folder)
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _kit_path  # noqa: F401,E402 - the kit's root on sys.path


def main(argv: list[str] | None = None) -> int:
    from helpers import finetune as ft
    from helpers import results
    from helpers.data import write_results
    from helpers.finetune import gguf_export as gx
    from helpers.hardware import cpu_description
    from helpers.models import ensure_embedded, load_model
    from helpers.paths import DATASETS
    from helpers.plan import plan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="held-out test rows each file is asked")
    parser.add_argument("--merged", default=None, help="the tuned model's merged folder (default: Lab 03's, from your results store)")
    parser.add_argument("--out", default=str(DATASETS / "results" / "gguf_layouts.csv"))
    args = parser.parse_args(argv)
    p = plan("03", override="tier=cpu")
    merged = Path(args.merged) if args.merged else results.artifact("03", "merged")
    if merged is None or not (merged / "config.json").exists():
        print(f"no tuned model at {merged}: run Lab 03 first (or pass --merged)", file=sys.stderr)
        return 2
    model, tokenizer = load_model(str(merged), precision="fp32", device="cpu")
    rows = ft.load_tickets("test")[: args.rows]
    reference = ft.predict(model, tokenizer, [r["message"] for r in rows], schema=False)
    del model
    table, _ = gx.take_away(merged, p, tokenizer, rows, reference, tempfile.mkdtemp(prefix="ots-layouts-"), quants=gx.WRITABLE)
    survival = gx.tuning_survival(ensure_embedded(), merged, gx.WRITABLE)
    table = table.join(survival)
    machine, day = cpu_description(), dt.date.today().isoformat()
    out = [{"GGUF": quant, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, "rows": len(rows),
            "machine": machine, "date": day, "source": "scripts/gguf_layouts.py (Lab 03's tuned CPU-tier model, its merged folder)"}
           for quant, row in table.iterrows()]
    path = write_results(args.out, out, same_run=("GGUF",))
    print(table.round(3).to_string())
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
