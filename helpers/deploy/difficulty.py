"""The router's difficulty score, learned from the support-desk dataset's labels.

A message is "hard" when it raises several issues at once (label ``multi_issue``): those are the
requests worth a stronger, paid model. The score is a logistic regression on how many categories'
vocabularies the message touches, its length and its sentence count, fitted on the training split
with plain numpy (full-batch gradient descent, float64, fixed iterations: the same weights on every
run); its accuracy on the held-out test split (other templates, other connecting phrases) is
reported with a 95 % Wilson interval next to the always-simple baseline.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

WORD = re.compile(r"[a-z']+")


def _words(message: str) -> set[str]:
    return set(WORD.findall(message.lower()))


def _extra(message: str) -> list[float]:
    sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", message)))
    return [len(message) / 300, sentences / 5]


@dataclass
class DifficultyModel:
    lexicons: dict[str, set[str]]   # per category: the words that mark it (learned from single-issue messages)
    weights: "object"               # numpy array over the features below
    bias: float

    def features(self, messages: list[str]):
        """Per message: categories it touches (>= 1 and >= 2 marker words), length, sentences."""
        import numpy as np

        rows = []
        for message in messages:
            words = _words(message)
            hits = [len(words & lexicon) for lexicon in self.lexicons.values()]
            rows.append([sum(h >= 1 for h in hits), sum(h >= 2 for h in hits), *_extra(message)])
        return np.array(rows, dtype=float)

    def scores(self, messages: list[str]):
        import numpy as np

        return 1 / (1 + np.exp(-(self.features(messages) @ self.weights + self.bias)))

    def __call__(self, message: str) -> float:
        """The probability that ``message`` is hard (raises several issues): the router's difficulty score."""
        return float(self.scores([message])[0])


def fit(rows: list[dict], words_per_category: int = 25, min_count: int = 5, steps: int = 2000, learning_rate: float = 0.5) -> DifficultyModel:
    """Fit on rows with ``message``, ``target.category`` and ``difficulty`` ("simple" / "multi_issue").

    A message that raises two issues touches two categories' vocabularies, whatever words join them:
    the lexicons come from single-issue messages (words much more frequent in one category than in the
    others), and the logistic regression learns how many touched categories make a message hard. Word
    features alone learn the training set's connecting phrases and fail on held-out templates.
    """
    import numpy as np

    from ..errors import InputError

    labels = np.array([row["difficulty"] == "multi_issue" for row in rows], dtype=float)
    if labels.min() == labels.max():
        raise InputError("the rows hold only one difficulty label", fix="fit on rows with both simple and multi_issue messages")
    single = [row for row in rows if row["difficulty"] == "simple"]
    categories = sorted({row["target"]["category"] for row in single})
    counts = {c: {} for c in categories}
    totals = {c: 0 for c in categories}
    for row in single:
        category = row["target"]["category"]
        totals[category] += 1
        for word in _words(row["message"]):
            counts[category][word] = counts[category].get(word, 0) + 1
    lexicons = {}
    for category in categories:
        others = sum(totals[o] for o in categories if o != category) or 1
        ratio = {w: (n / totals[category]) / (sum(counts[o].get(w, 0) for o in categories if o != category) / others + 0.01)
                 for w, n in counts[category].items() if n >= min_count}
        lexicons[category] = set(sorted(ratio, key=lambda w: (-ratio[w], w))[:words_per_category])
    model = DifficultyModel(lexicons, np.zeros(4), 0.0)
    x = model.features([row["message"] for row in rows])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ model.weights + model.bias)))
        model.weights -= learning_rate * (x.T @ (p - labels) / len(rows))
        model.bias -= learning_rate * float(np.mean(p - labels))
    return model


def accuracy(model: DifficultyModel, rows: list[dict], threshold: float = 0.5) -> dict[str, float]:
    """Share of rows whose hard/simple call at ``threshold`` matches the label, with its 95 % Wilson interval."""
    from ..finetune import wilson_interval

    scores = model.scores([row["message"] for row in rows])
    correct = sum((s >= threshold) == (row["difficulty"] == "multi_issue") for s, row in zip(scores, rows))
    low, high = wilson_interval(int(correct), len(rows))
    hard = sum(row["difficulty"] == "multi_issue" for row in rows)
    return {"accuracy": float(correct) / len(rows), "low": low, "high": high, "n": len(rows),
            "always-simple baseline": 1 - hard / len(rows) if rows else math.nan}
