"""SQuAD-style answer scoring as CoQA uses it: normalised exact match and token-overlap F1.

Written for this project because lm-eval's CoQA task imports ``transformers.data.metrics.squad_metrics``,
which transformers 5 removed. The rules below follow the official CoQA evaluation script
(``evaluate-v1.0.py``) and transformers' old ``squad_metrics`` (the SQuAD 2.0 script), which agree:

* Normalisation: lowercase, drop ASCII punctuation, drop the words "a", "an", "the", collapse whitespace.
* Empty answers: an answer that normalises to nothing (``""``, ``"The."``) has no tokens. F1 is then 1.0 when
  both sides are empty and 0.0 when only one is (SQuAD 2.0 / CoQA). The SQuAD 1.1 script differed: it gave
  0.0 even when both were empty; we follow CoQA, whose "unknown"-style answers need the 2.0 rule.

Several gold answers per question (CoQA has up to four) can be combined two ways, both provided here:

* :func:`max_over_golds`: the best score against any gold (SQuAD's rule).
* :func:`leave_one_out`: for each gold in turn, the best score against the *others*, averaged (CoQA's rule).
  Each human annotator is scored against the rest, so a model is measured on the same scale as a human.
  **lm-eval 0.4.13's CoQA task uses this rule too** (``compute_scores`` in ``tasks/coqa/utils.py``), after it
  removed case-insensitive duplicates from the gold list; the official script does not de-duplicate.
  Scores under the two rules are not comparable: use :func:`leave_one_out` to reproduce lm-eval's numbers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from harness.errors import InvalidArgument

__all__ = [
    "AnswerMetric",
    "answer_tokens",
    "exact_match",
    "f1_score",
    "leave_one_out",
    "max_over_golds",
    "normalize_answer",
]

AnswerMetric = Callable[[str, str], float]
"""A metric called as ``metric(prediction, gold)``, returning a score in [0, 1]."""

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation and articles, collapse whitespace: "The Cat's hat!" -> "cats hat".

    The steps run in the official scripts' order (punctuation before articles), which matters for text such as
    "a-b": removing "-" first leaves "ab", which is not an article."""
    lowered = text.lower()
    without_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def answer_tokens(text: str) -> list[str]:
    """The normalised words of an answer, the units F1 counts."""
    return normalize_answer(text).split()


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the answers are equal after normalisation, else 0.0 ("The Eiffel Tower." matches "eiffel tower")."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall, counting repeated words as often as both sides have them.

    Partial credit is the point: "in the old oak tree" against "oak tree" shares 2 of 4 predicted tokens
    (articles removed) and both gold tokens, so precision 0.5, recall 1.0, F1 2/3.
    Empty after normalisation: 1.0 if both are empty, 0.0 if one is (the SQuAD 2.0 / CoQA rule)."""
    prediction_tokens = answer_tokens(prediction)
    gold_tokens = answer_tokens(gold)
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    overlap = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str):
        raise InvalidArgument(f"golds={golds!r}, expected a sequence of answer strings, not one string")
    if len(golds) == 0:
        raise InvalidArgument("golds=[], expected at least one gold answer")


def max_over_golds(metric: AnswerMetric, prediction: str, golds: Sequence[str]) -> float:
    """The best ``metric(prediction, gold)`` over all golds: credit for matching any annotator."""
    _check_golds(golds)
    return max(metric(prediction, gold) for gold in golds)


def leave_one_out(metric: AnswerMetric, prediction: str, golds: Sequence[str]) -> float:
    """CoQA's (and lm-eval's) rule: average over i of the best score against all golds but the i-th.

    With one gold it is that gold's score. It is never above :func:`max_over_golds`: a prediction that
    matches only one of n annotators gets (n-1)/n of the credit, the chance a human would have had."""
    _check_golds(golds)
    if len(golds) == 1:
        return metric(prediction, golds[0])
    scores = [metric(prediction, gold) for gold in golds]
    total = 0.0
    for left_out in range(len(scores)):
        total += max(score for index, score in enumerate(scores) if index != left_out)
    return total / len(scores)
