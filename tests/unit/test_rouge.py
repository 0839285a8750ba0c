"""ROUGE-L parity with Google's reference scorer, ``rouge_score`` (a dev dependency only).

Our ``rouge_l`` mirrors ``RougeScorer(["rougeL"])`` with its defaults (no stemmer, its own
tokenizer) and reports the F-measure. The cases are the reference's own examples (its README
and its rouge_scorer_test.py), plus tokenization edge cases where a word splitter can differ.
Non-ascii letters are dropped by rouge_score's tokenizer; we match that exactly rather than
keep them, so a ROUGE-L figure here means the same as a published one.
"""

import pytest
from rouge_score import rouge_scorer

from playground.metrics import rouge_l, score

CASES = [
    # rouge_score README / RougeScorer docstring
    ("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog"),
    # rouge_scorer_test.py: (prediction, target); the reference's own expected F-measures are asserted below
    ("testing one", "testing one two"),
    ("testing two", "testing one two"),
    ("", "testing one two"),
    # hyphens, apostrophes, underscores and digits split or join words the same way
    ("AI-powered tool wins award", "AI powered tool wins award"),
    ("state-of-the-art model", "state of the art model"),
    ("Don't stop: it's 2024's best!", "don t stop it s 2024 s best"),
    ("snake_case vs. camelCase", "snake case vs camelcase"),
    ("GPT-4o beats v3.5", "gpt 4o beats v3 5"),
    # empty and punctuation-only sides score 0, even against each other
    ("", ""),
    ("", "a headline"),
    ("!!! ... ---", "!!! ... ---"),
    ("?", "Council approves park"),
    ("   \n\t ", "Council approves park"),
    # unicode letters: dropped by the reference, so dropped here too
    ("Zürich council approves park", "Zurich council approves park"),
    ("Zürich", "Zürich"),
    ("Москва принимает бюджет", "Москва принимает бюджет"),
    ("東京 mayor re-elected", "東京 mayor reelected"),
    ("naïve café opens", "naive cafe opens"),
    ("ﬁnal result", "final result"),  # ligature: lower() keeps it, so it is not a-z
    ("İstanbul votes", "istanbul votes"),  # lower() turns İ into i + a combining dot
    ("KELVIN scale", "kelvin scale"),  # U+212A KELVIN SIGN lowercases to an ascii k
    # repeated words, where the LCS (not bag-of-words overlap) decides
    ("the the the cat", "the cat sat on the mat"),
    ("city council approves new park", "council approves park plan"),
]


@pytest.fixture(scope="module")
def reference():
    return rouge_scorer.RougeScorer(["rougeL"])  # its defaults: use_stemmer=False, default tokenizer


@pytest.mark.parametrize("pred,target", CASES)
def test_rouge_l_equals_rouge_score(reference, pred, target):
    expected = reference.score(target, pred)["rougeL"].fmeasure  # score(target, prediction)
    assert rouge_l(pred, target) == expected


def test_the_reference_examples_give_the_reference_numbers():
    # Expected values as rouge_score's own tests and README state them.
    assert rouge_l("testing one", "testing one two") == pytest.approx(4 / 5)
    assert rouge_l("testing two", "testing one two") == pytest.approx(4 / 5)
    assert rouge_l("", "testing one two") == 0.0
    # README: LCS "the quick brown jumps the" (5) over 9 target and 8 predicted words
    assert rouge_l("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog") \
        == pytest.approx(2 * (5 / 8) * (5 / 9) / (5 / 8 + 5 / 9))


def test_a_hyphen_splits_words():
    assert rouge_l("AI-powered tool wins award", "AI powered tool wins award") == 1.0


def test_the_mean_over_a_split_matches_the_reference(reference):
    preds, targets = zip(*CASES)
    expected = sum(reference.score(t, p)["rougeL"].fmeasure for p, t in CASES) / len(CASES)
    assert score("rouge_l", list(preds), list(targets)) == pytest.approx(expected, abs=1e-12)
