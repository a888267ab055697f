"""power_bert_ops.training.speed: the compiled-against-eager check of `benchmark --compile`."""
import math
from types import SimpleNamespace

import torch

from power_bert_ops.training.speed import _compiled_difference


class Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, **batch):
        return SimpleNamespace(logits=self.logits)


def test_compiled_difference_sees_nan_and_flipped_predictions():
    want = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    flipped = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    nan = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]])
    batches = [{}]
    same = _compiled_difference({"m": Fixed(want)}, {"m": Fixed(want.clone())}, batches)
    assert same == {"compile_max_abs_diff": 0.0, "compile_predictions_differ": 0, "compile_rows_checked": 2}
    one = _compiled_difference({"m": Fixed(want)}, {"m": Fixed(flipped)}, batches)
    assert one["compile_max_abs_diff"] == 1.0 and one["compile_predictions_differ"] == 1
    # a NaN logit between finite ones makes the difference NaN, not the finite maximum
    got = _compiled_difference({"a": Fixed(want), "b": Fixed(want), "c": Fixed(want)},
                               {"a": Fixed(flipped), "b": Fixed(nan), "c": Fixed(flipped)}, batches)
    assert math.isnan(got["compile_max_abs_diff"])
    # regression (one output): no predictions to compare
    scalar = _compiled_difference({"m": Fixed(want[:, :1])}, {"m": Fixed(want[:, :1] + 0.5)}, batches)
    assert scalar["compile_predictions_differ"] is None and scalar["compile_max_abs_diff"] == 0.5
