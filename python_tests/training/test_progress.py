"""Progress bars written to a log file or a pipe redraw every LOG_INTERVAL_S seconds, and no evaluation bar
nests under the training bar there (power_bert_ops._progress, training.trainer.EpochLineCallback)."""
import io
import sys

import pytest
from tqdm import tqdm

from power_bert_ops._progress import LOG_INTERVAL_S, paced


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _draws(stream, seconds=90.0, updates=900) -> int:
    """Redraws of a paced bar of ``updates`` steps spread over ``seconds`` of a fake clock."""
    clock = [0.0]
    bar = tqdm(total=updates, file=stream)
    bar._time = lambda: clock[0]
    bar.start_t = bar.last_print_t = 0.0
    paced(bar)
    for _ in range(updates):
        clock[0] += seconds / updates
        bar.update()
    bar.close()
    return stream.getvalue().count(f"/{updates} [")


@pytest.fixture(autouse=True)
def _no_monitor(monkeypatch):
    monkeypatch.setattr(tqdm, "monitor_interval", 0)  # tqdm's monitor thread reads the real clock
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)


def test_bar_off_a_terminal_redraws_every_interval():
    draws = _draws(io.StringIO())
    assert 2 <= draws <= 90 / LOG_INTERVAL_S + 3, draws  # first draw, one per interval, the last at close


def test_bar_on_a_terminal_is_left_as_it_is():
    assert _draws(_Terminal()) >= 500  # tqdm's own 0.1 s: about one redraw per update of 0.1 s


def test_interval_from_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "0.1")  # the user's own pace: paced leaves the bar as tqdm made it
    assert _draws(io.StringIO()) >= 500


def test_disabled_and_missing_bars_pass_through():
    assert paced(None) is None
    bar = tqdm(total=3, disable=True)
    assert paced(bar) is bar


@pytest.mark.parametrize("terminal", [True, False])
def test_evaluation_bars_only_on_a_terminal(terminal, monkeypatch):
    """An evaluation bar under the training bar, or after it (the kept model's evaluation, when the
    training bar has closed), is drawn on a terminal and left out of a log file or a pipe."""
    from types import SimpleNamespace

    from power_bert_ops.training.trainer import EpochLineCallback

    monkeypatch.setattr(sys, "stderr", _Terminal() if terminal else io.StringIO())  # where the bars write
    state = SimpleNamespace(is_world_process_zero=True)
    for during_training in (True, False):
        cb = EpochLineCallback("finetune", "accuracy")
        cb.training_bar = tqdm(total=10, file=sys.stderr) if during_training else None
        cb.on_prediction_step(None, state, None, eval_dataloader=[1, 2, 3])
        assert (cb.prediction_bar is not None) == terminal, during_training
        for bar in (cb.prediction_bar, cb.training_bar):
            if bar is not None:
                bar.close()
