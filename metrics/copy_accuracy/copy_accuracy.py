"""Copy accuracy: did the model reproduce the suffix it saw earlier in its context?"""

import datasets
import evaluate


_DESCRIPTION = """
Scores context copying as in "Language Models 'Grok' to Copy" (Lv et al., NAACL 2025): each
prediction is the model's greedy continuation after a query prefix and each reference is the
suffix that followed that prefix earlier in the context. `exact_match` is the share of
predictions equal to their reference as a whole; `token_accuracy` is the share of reference
positions predicted correctly (a missing position counts as wrong). Predictions and references
are lists of token ids (compared token by token) or strings (compared character by character).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`, or `list` of `str`): the model's continuations.
    references (`list` of `list` of `int`, or `list` of `str`): the suffixes to reproduce.
Returns:
    exact_match (`float`): share of predictions identical to their reference, in [0, 1].
    token_accuracy (`float`): share of reference positions predicted correctly, in [0, 1].
Examples:
    >>> copy_accuracy = evaluate.load("metrics/copy_accuracy")
    >>> copy_accuracy.compute(predictions=[[5, 6, 7], [1, 2, 3]], references=[[5, 6, 7], [1, 2, 4]])
    {'exact_match': 0.5, 'token_accuracy': 0.8333333333333334}
    >>> copy_accuracy.compute(predictions=["d7ba71"], references=["d7ba7e"])
    {'exact_match': 0.0, 'token_accuracy': 0.8333333333333334}
"""

_CITATION = """
@inproceedings{lv2025grok,
  title={Language Models ``Grok'' to Copy},
  author={Lv, Ang and Xie, Ruobing and Sun, Xingwu and Kang, Zhanhui and Yan, Rui},
  booktitle={NAACL},
  year={2025}
}
"""


def score_pairs(predictions, references):
    """The metric's arithmetic, usable without the `evaluate` machinery."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("nothing to score: predictions and references are empty")
    exact = correct = total = 0
    for pred, ref in zip(predictions, references):
        pred, ref = list(pred), list(ref)
        exact += pred == ref
        correct += sum(p == r for p, r in zip(pred, ref))
        total += len(ref)
    return {
        "exact_match": exact / len(references),
        "token_accuracy": correct / total if total else float(exact == len(references)),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CopyAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("int64")),
                        "references": datasets.Sequence(datasets.Value("int64")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://arxiv.org/abs/2409.09281"],
        )

    def _compute(self, predictions, references):
        return score_pairs(predictions, references)
