"""Held-out metrics: normalized exact match, case-sensitive exact match, token F1 and ROUGE-L.

All scores are fractions in [0, 1]; the UI and cards show them as percentages.
ROUGE-L is written out here (an LCS over words) to give the F-measure of rouge_score's
``RougeScorer(["rougeL"])`` (its defaults: no stemmer) without its nltk and absl dependencies.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style: lowercase, fold accents, drop punctuation and English articles, squeeze spaces.

    >>> normalize("  The Capital is BRASÍLIA! ")
    'capital is brasilia'
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(pred: str, target: str) -> float:
    return float(normalize(pred) == normalize(target))


def exact_match_cased(pred: str, target: str) -> float:
    """Case and punctuation count (for style tasks such as SHOUTING); only spacing is forgiven."""
    return float(" ".join(pred.split()) == " ".join(target.split()))


def token_f1(pred: str, target: str) -> float:
    p, t = normalize(pred).split(), normalize(target).split()
    common = sum((Counter(p) & Counter(t)).values())
    if not p or not t or common == 0:
        return float(p == t)
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(pred: str, target: str) -> float:
    """ROUGE-L F1 over rouge_score's words, the lowercase runs of a-z0-9: "AI-powered" is two words and,
    as in rouge_score, other letters are dropped ("Zürich" is "z rich"); a side with no words scores 0."""
    p, t = (re.findall(r"[a-z0-9]+", s.lower()) for s in (pred, target))
    lcs = _lcs(p, t)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(t)
    return 2 * precision * recall / (precision + recall)


METRICS = {
    "exact_match": exact_match,
    "exact_match_cased": exact_match_cased,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}

METRIC_LABELS = {
    "exact_match": "exact match",
    "exact_match_cased": "exact match (case-sensitive)",
    "token_f1": "token F1",
    "rouge_l": "ROUGE-L F1",
}


def score(metric: str, preds: list[str], targets: list[str]) -> float:
    """Mean of the per-example metric."""
    return sum(map(METRICS[metric], preds, targets)) / len(targets) if targets else 0.0
