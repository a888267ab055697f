"""Which word vectors a PoWER-BERT model keeps in each layer, for one input.

    from power_bert_ops.explain import explain, plot_explanation
    kept = explain(model, tokenizer, "a gripping, beautifully shot film")
    plot_explanation(kept, "kept.png")

The model is run as it is (hard mode) with an :class:`~power_bert_ops.modeling.EncoderRecord`,
which its encoder fills with the rows each layer keeps; those are composed back to input
positions. Whichever kernel the selection runs, the record is the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ._quiet import quiet_transformers  # noqa: E402
from .modeling import EncoderRecord  # noqa: E402


@dataclass
class Explanation:
    tokens: list[str]  # the input's tokens, [CLS] first
    kept: list[list[int]]  # kept[j] = input positions alive after layer j+1 (ascending)
    retention: list[int]
    prediction: str | int | float
    input_tokens: int | None = None  # the text's tokens before truncation to N (None: not counted)

    @property
    def truncated(self) -> bool:
        return self.input_tokens is not None and self.input_tokens > len(self.tokens)

    def as_text(self) -> str:
        cut = f", truncated from {self.input_tokens}" if self.truncated else ""
        lines = [f"input ({len(self.tokens)} tokens{cut}): {' '.join(self.tokens)}"]
        for j, positions in enumerate(self.kept):
            words = " ".join(self.tokens[p] for p in positions)
            lines.append(f"layer {j + 1:2d} keeps {len(positions):3d}: {words}")
        lines.append(f"prediction: {self.prediction}")
        return "\n".join(lines)


@torch.inference_mode()
def explain(model, tokenizer, text: str, text_pair: str | None = None, max_length: int | None = None) -> Explanation:
    """Runs ``model`` (a PoWER-BERT sequence classifier in hard mode) on one text and returns
    the input positions alive after each layer."""
    if getattr(model, "retention", None) is None or model.mode != "hard":
        raise ValueError("explain: the model must be a PoWER-BERT model in hard mode (it has no retention configuration)")
    max_length = max_length or model.config.sequence_length
    # a batch of one, as predict tokenizes: a single call would drop an empty second segment
    pair = None if text_pair is None else [text_pair]
    with quiet_transformers():  # a text longer than N is truncated on purpose (and said so)
        enc = tokenizer([text], pair, truncation=True, max_length=max_length, return_tensors="pt")
        total = len(tokenizer([text], pair, truncation=False)["input_ids"][0])
    device = next(model.parameters()).device
    model.eval()
    record = EncoderRecord()
    logits = model(**{k: v.to(device) for k, v in enc.items()}, power_bert_record=record).logits[0].float().cpu()
    n = enc["input_ids"].shape[1]
    kept = [list(range(n)) if pos is None else pos[0].tolist() for pos in record.original_positions()]
    cfg = model.model.config
    if logits.numel() == 1:
        prediction = float(logits[0])
    else:
        cls = int(logits.argmax())
        prediction = (cfg.id2label or {}).get(cls, cls)
    return Explanation(tokens=tokenizer.convert_ids_to_tokens(enc["input_ids"][0]), kept=kept,
                       retention=list(model.retention), prediction=prediction, input_tokens=total)


def plot_explanation(exp: Explanation, path: str) -> None:
    """A layers x tokens picture: a filled cell where the token is still alive after the layer.
    The format follows the suffix (none: PNG, written to ``path`` as given); the picture is
    written to a temporary file renamed over ``path``, so a failure leaves no half file."""
    from .training.outputs import replace_atomically

    fmt = Path(path).suffix[1:].lower() or "png"
    L, n = len(exp.kept), len(exp.tokens)
    grid = torch.zeros(L, n)
    for j, positions in enumerate(exp.kept):
        grid[j, positions] = 1
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * n + 1.5), 0.35 * L + 1.6))
    ax.imshow(grid.numpy(), cmap="Blues", vmin=0, vmax=1.3, aspect="auto")
    ax.set_xticks(range(n))
    ax.set_xticklabels(exp.tokens, rotation=70, fontsize=8)
    ax.set_yticks(range(L))
    ax.set_yticklabels([f"layer {j + 1} ({len(k)})" for j, k in enumerate(exp.kept)], fontsize=8)
    ax.set_title(f"word vectors kept per layer (prediction: {exp.prediction})", fontsize=9)
    fig.tight_layout()
    try:
        with replace_atomically(path, "wb") as f:
            fig.savefig(f, format=fmt, dpi=120)
    finally:
        plt.close(fig)
