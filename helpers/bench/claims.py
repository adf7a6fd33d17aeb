"""Lab 04's tests of the source articles' benchmark claims (C13, C14) and of C12 where Lab 04 can.

C13 and C14 are about models no CPU can run: they are checked against dated, sourced published
scores (``datasets/bench/published_scores.csv``), and the evidence names who evaluated what with
which setting, because vendors' own harnesses differ. The learner's own measurement enters where the
tier allows it: the support-desk task measured in this lab (quality with intervals).
"""
from __future__ import annotations

from ..data import load_rows

SCORES_FILE = "bench/published_scores.csv"


def published_scores() -> dict[tuple[str, str], dict]:
    """(model, benchmark) -> the row (score, setting, evaluated_by, source, date)."""
    rows = load_rows(SCORES_FILE, numeric=["score"], required=["model", "benchmark", "setting", "evaluated_by"], sourced=True)
    return {(row["model"], row["benchmark"]): row for row in rows}


def _cite(row: dict) -> str:
    return f"{row['score']:g} ({row['setting']}, {row['evaluated_by'].split(' (')[0]}, {row['date']})"


def check_c13() -> dict:
    """C13: Mistral 7B beats Llama 2 7B (and many 13B models) on MMLU, reasoning, comprehension."""
    scores = published_scores()
    comparisons = {}
    for benchmark in ("MMLU", "Winogrande", "BoolQ"):
        mistral = scores[("mistral-7b-v0.1", benchmark)]
        for rival in ("llama2-7b", "llama2-13b"):
            other = scores[(rival, benchmark)]
            comparisons[(benchmark, rival)] = {"mistral": mistral, "rival": other, "wins": mistral["score"] > other["score"],
                                               "same setting": mistral["setting"] == other["setting"]}
    beats_7b = all(c["wins"] for (b, r), c in comparisons.items() if r == "llama2-7b")
    beats_13b = [b for (b, r), c in comparisons.items() if r == "llama2-13b" and c["wins"]]
    mixed_settings = sorted({b for (b, r), c in comparisons.items() if not c["same setting"]})
    evidence = "; ".join(f"{b}: Mistral 7B {_cite(c['mistral'])} vs {r} {_cite(c['rival'])}" for (b, r), c in comparisons.items())
    if beats_7b and len(beats_13b) == 3:
        verdict = "holds on the vendors' published scores"
        if mixed_settings:
            verdict = (f"holds only if vendors' own numbers are comparable: Mistral and Meta used different harnesses, "
                       f"and different shot counts on {', '.join(mixed_settings)}")
    elif beats_7b:
        verdict = f"holds only if against Llama 2 7B: against 13B it wins on {', '.join(beats_13b) or 'none'} of the three"
    else:
        verdict = "does not hold on the published scores"
    return {"verdict": verdict, "evidence": evidence, "comparisons": comparisons}


def check_c14(low: float = 0.82, high: float = 0.88) -> dict:
    """C14: Llama 3 70B reaches 82-88% of GPT-4's scores on MMLU/HumanEval/MT-Bench."""
    scores = published_scores()
    ratios, cited = {}, []
    for benchmark in ("MMLU", "HumanEval"):
        llama, gpt4 = scores[("llama3-70b-instruct", benchmark)], scores[("gpt-4", benchmark)]
        ratios[benchmark] = llama["score"] / gpt4["score"]
        cited.append(f"{benchmark}: Llama 3 70B Instruct {_cite(llama)} / GPT-4 {_cite(gpt4)} = {ratios[benchmark]:.0%}")
    inside = [b for b, r in ratios.items() if low <= r <= high]
    above = [b for b, r in ratios.items() if r > high]
    if len(inside) == len(ratios):
        verdict = "holds"
    elif above and not [b for b, r in ratios.items() if r < low]:
        verdict = (f"does not hold: the claim undersells it, Llama 3 70B reaches more than {high:.0%} of GPT-4 "
                   f"({', '.join(f'{b} {ratios[b]:.0%}' for b in above)}); MT-Bench has no published pair here")
    else:
        verdict = "does not hold on the published scores"
    evidence = "; ".join(cited) + " (GPT-4 = the March 2023 model, as the claim means; vendors' own evaluations)"
    return {"verdict": verdict, "evidence": evidence, "ratios": ratios}
