"""The CPU tier's learning curve: one Lab 03 training run on the CPU plan, evaluated on held-out test rows every
``--every`` steps (category, priority, personal data, exact match and valid JSON, each with its 95 % interval), with
the training minutes so far. Writes ``datasets/results/cpu_learning_curve.csv`` (whose run: this machine, dated).

    .venv/bin/python scripts/cpu_learning_curve.py --steps 192 --every 48 --rows 128

The run is one schedule of ``--steps`` steps (Lab 03's recipe: LoRA r=16 on every projection, the plan's batch, the
learning rate given), stopped and resumed from its own checkpoints at each evaluation, so the curve is the run Lab 03
would make with that many steps, not a series of restarts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _kit_path  # noqa: F401,E402 - the kit's root on sys.path

METRICS = ("category", "priority", "personal_data", "needs_human", "exact match", "valid JSON")


def main(argv: list[str] | None = None) -> int:
    from helpers import finetune as ft
    from helpers.data import write_results
    from helpers.hardware import cpu_description
    from helpers.models import load_model
    from helpers.paths import DATASETS
    from helpers.plan import plan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=192)
    parser.add_argument("--every", type=int, default=48)
    parser.add_argument("--rows", type=int, default=128, help="held-out test rows each evaluation scores")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: Lab 03's CPU setting")
    parser.add_argument("--schedule", default="linear", help="the learning rate's shape: linear, cosine, constant_with_warmup")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the steps the learning rate warms up over")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--targets", choices=["all", "attention", "full"], default="all",
                        help="LoRA on every projection or on q/k/v/o only, or 'full': train the adapted layers' own weights "
                             "(full fine-tuning of the top --layers; give it a smaller --learning-rate, e.g. 2e-4)")
    parser.add_argument("--layers", type=int, default=None, help="adapt only the top N layers (default: all); the backward "
                        "pass then stops at the lowest adapted layer")
    parser.add_argument("--batch", type=int, default=None, help="rows a step (default: the plan's)")
    parser.add_argument("--schema-prompt", action="store_true", help="train and ask with the prompt that lists the keys and values")
    parser.add_argument("--neftune", type=float, default=None, help="NEFTune: noise on the input embeddings while training (alpha, e.g. 5)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed: which rows each step takes, in which order (Lab 03: 0)")
    parser.add_argument("--average", type=float, default=None, help="also score, at the end, the mean of the trained weights over "
                        "this last share of the steps (e.g. 0.5), from the same run (ft.TailAverage; Lab 03's train(average=...))")
    parser.add_argument("--phrasing-out", default=None, help="also write each evaluation's errors by held-out phrasing "
                        "(ft.errors_by_phrasing) to this CSV, e.g. datasets/results/cpu_phrasing_errors.csv")
    parser.add_argument("--out", default=str(DATASETS / "results" / "cpu_learning_curve.csv"))
    args = parser.parse_args(argv)
    p = plan("03", override="tier=cpu")
    settings = ft.run_settings(p)
    rate = args.learning_rate or settings.learning_rate
    model, tokenizer = load_model(plan=p)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"] if args.targets == "attention" else None
    depth = model.config.num_hidden_layers
    layers = min(args.layers or depth, depth)
    if args.targets == "full":  # every weight of the top layers trains; the rest stays frozen
        model = ft.unfreeze_top_layers(model, layers)
    else:
        model = ft.add_lora(model, ft.lora_config(r=args.rank, alpha=2 * args.rank, dropout=settings.lora_dropout, targets=targets,
                                                  layers=list(range(depth - layers, depth)) if layers < depth else None))
    batch = args.batch or settings.batch_size
    train, test = ft.load_tickets("train"), ft.load_tickets("test")[: args.rows]
    checkpoints = Path(tempfile.mkdtemp(prefix="ots-curve-"))
    machine, day = cpu_description(), dt.date.today().isoformat()
    rows, phrasing_rows, trained_s = [], [], 0.0
    averager = ft.TailAverage(model, args.steps, args.average) if args.average else None

    def evaluation(stop: int, average) -> list[dict]:
        replies = ft.predict(model, tokenizer, [r["message"] for r in test], schema=args.schema_prompt, progress=False)
        table = ft.evaluate(replies, test)
        recipe = {"learning rate": rate, "batch": batch, "schedule": args.schedule, "warmup": args.warmup, "rank": args.rank,
                  "targets": args.targets, "layers": layers, "run steps": args.steps, "prompt": "schema" if args.schema_prompt else "",
                  "neftune": args.neftune or "", "seed": args.seed or "", "average": average, "machine": machine, "date": day}
        if args.phrasing_out:
            for phrasing, row in ft.errors_by_phrasing(replies, test).iterrows():
                phrasing_rows.append({"steps": stop, "phrasing": phrasing, "rows": int(row["rows"]), "right": round(float(row["right"]), 4),
                                      "mostly read as": row["mostly read as"], "example": row["example"], **recipe,
                                      "source": "scripts/cpu_learning_curve.py --phrasing-out (ft.errors_by_phrasing)"})
        out = []
        for metric in METRICS:
            row = table.loc[metric]
            out.append({"steps": stop, "training minutes": round(trained_s / 60, 2), "examples seen": stop * batch,
                        "metric": metric, "rate": round(float(row["rate"]), 4), "low": round(float(row["low"]), 4),
                        "high": round(float(row["high"]), 4), "n": int(row["n"]), **recipe,
                        "source": "scripts/cpu_learning_curve.py (Lab 03's CPU recipe, one run evaluated as it trains)"})
        said = ", ".join(f"{m} {table.loc[m, 'rate']:.0%} ({table.loc[m, 'low']:.0%}-{table.loc[m, 'high']:.0%})" for m in METRICS[:4])
        weights = f"mean of the last {average:.0%} of steps" if average else "last step"
        print(f"step {stop} ({weights}): {trained_s / 60:.1f} min of training; {said} on {len(test)} test rows", flush=True)
        return out

    for stop in range(args.every, args.steps + 1, args.every):
        started = time.monotonic()
        ft.train(model, tokenizer, train, steps=args.steps, batch_size=batch, learning_rate=rate, plan=p,
                 checkpoint_dir=checkpoints, save_every=args.every, stop_after=stop if stop < args.steps else None,
                 progress=False, schedule=args.schedule, warmup=args.warmup,
                 schema=args.schema_prompt, neftune=args.neftune, seed=args.seed, callbacks=[averager] if averager else None)
        trained_s += time.monotonic() - started
        # the weights scored: the last step's, and at the end of a run with --average also the mean (from the same run)
        for average in ("", *([args.average] if averager and stop == args.steps else [])):
            if average:
                averager.apply()
            rows += evaluation(stop, average)

    # a run of the same recipe on the same machine replaces its rows; another learning rate or batch adds its own
    same = ("machine", "learning rate", "batch", "schedule", "warmup", "rank", "targets", "layers", "run steps", "prompt", "neftune",
            "seed", "average", "steps")
    print(f"written to {write_results(args.out, rows, same_run=(*same, 'metric'))}")
    if args.phrasing_out:
        print(f"written to {write_results(args.phrasing_out, phrasing_rows, same_run=(*same, 'phrasing'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
