"""The PoWER-BERT encoder: the layer loop of SPEC 1.2 / 1.3 over a Hugging Face encoder's own
layers, reached through a per-family adapter (``adapters.py``).

The encoder reads its settings (mode, retention, exclude_self, retention_scale,
sequence_length, power_attention) from the :class:`PowerBertConfig` of the PoWER model that
owns it, at every call. One pass returns an :class:`EncoderRecord`: the last hidden states,
the rows each eliminating layer kept (read by ``power_bert_ops.explain``) and, when asked,
every layer's output.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from .. import ops as _ops  # noqa: F401  (registers torch.ops.power_bert: kernels, fake kernels, autograd)
from .._backend import attention_kernel_runs
from .._checks import _no_data
from ..flops import row_floors, rows_floor
from .adapters import ADAPTERS
from ..reference import rank_of, significance_with_grad
from .widths import hard_widths, relative_rows, relative_soft_factor, threshold_rows

__all__ = ["EncoderRecord", "PowerBertEncoder", "eager_attention"]

# The encoder calls the public ops, as a user does; which kernel runs on each device is decided
# once in power_bert_ops._backend. attention_kernel_runs says whether the fused attention has a
# kernel for the input: power_attention='auto' uses it to choose between 'fused' and 'eager'.
_ops_ns = torch.ops.power_bert


def eager_attention(q, k, v, mask, dropout_p: float, exclude_self: bool, row_weight=None,
                    differentiable: bool = False):
    """The eager-probabilities path: softmax probabilities [B, H, n, n] (in float32, then q's
    dtype), SPEC 1.1 significance of them, and their (dropped-out) product with v.

    q, k, v [B, H, n, d], mask [B, n] key padding, row_weight None or float [B, n] in [0, 1]:
    each row's weight as a key (log-weight added to its logits, differentiable) and as a query
    of the significance (a row at weight 0 neither receives attention nor gives significance, as
    if removed) -> (out [B, H, n, d], significance f32 [B, n]). The significance has no gradient
    unless ``differentiable``: then it is the same sum written in PyTorch over the probabilities
    before dropout, and gradients flow through it into q and k."""
    logits = torch.matmul(q, k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)
    if row_weight is not None:
        logits = logits + row_weight.float().clamp(min=1e-12).log()[:, None, None, :]
    logits = logits.masked_fill((mask == 0)[:, None, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1).to(q.dtype)
    weighted = probs if row_weight is None else (probs * row_weight.detach()[:, None, :, None]).to(probs.dtype)
    if differentiable:
        sig = significance_with_grad(weighted, mask, exclude_self)
    else:
        sig = _ops_ns.significance(weighted.detach(), mask, exclude_self)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p, training=True)
    return torch.matmul(probs, v), sig


@dataclass
class EncoderRecord:
    """One pass of the PoWER encoder.

    ``kept[j]``: the int64 [B, ℓ_j] positions (among layer j's input rows) that layer j kept,
    or None where it kept every row. ``masks[j]``: the key mask [B, ℓ_j] of layer j's output
    rows (None where the pass had no mask and kept every row). ``hidden_states``: None, or (when
    the caller passes a list) the encoder input followed by every layer's output (layer j's holds
    its kept rows). ``significance``: None, or (when the caller passes a list) per layer the
    float32 [B, n_in] significance of its input rows (None where the layer computed none).
    ``significance_grad``: None, or (when the caller passes a list) per layer the same
    significance with its gradient where the layer removes rows (None elsewhere); asking for it
    runs those layers on the eager attention path (ranking distillation trains through it)."""

    hidden_states: list[torch.Tensor] | None = None
    significance: list[torch.Tensor | None] | None = None
    significance_grad: list[torch.Tensor | None] | None = None
    kept: list[torch.Tensor | None] = field(default_factory=list)
    masks: list[torch.Tensor | None] = field(default_factory=list)
    last_hidden_state: torch.Tensor | None = None

    def add_layer(self, x: torch.Tensor, index: torch.Tensor | None, mask: torch.Tensor | None) -> None:
        self.kept.append(index)
        self.masks.append(mask)
        if self.hidden_states is not None:
            self.hidden_states.append(x)

    def original_positions(self) -> list[torch.Tensor | None]:
        """Per layer, the int64 [B, ℓ_j] positions in the encoder's input of the rows layer j
        output (``kept`` composed through the layers, in one pass); None where no layer up to it
        removed rows."""
        positions, pos = [], None
        for index in self.kept:
            if index is not None:
                pos = index if pos is None else pos.gather(1, index)
            positions.append(pos)
        return positions


def _mask_from_hf(attention_mask: torch.Tensor, n: int) -> torch.Tensor:
    """2-D key mask from a mask Hugging Face prepared: 2-D as is; 4-D bool (True = attend) or
    additive float (0 = attend): row 0 of the first head."""
    if attention_mask.dim() == 2:
        return attention_mask
    m = attention_mask[:, 0, 0, :n] if attention_mask.dim() == 4 else attention_mask.reshape(-1, n)
    if m.dtype == torch.bool:
        return m
    return m > torch.finfo(m.dtype).min / 2 if m.is_floating_point() else m != 0


class PowerBertEncoder(nn.Module):
    """Drop-in replacement of a Hugging Face encoder (BertEncoder, RobertaEncoder, ElectraEncoder,
    AlbertTransformer) running the PoWER-BERT layer loop. It adopts the original encoder's
    children under their own names, so parameter names (and checkpoints) are unchanged.

    Called by the Hugging Face base model as ``encoder(hidden_states, attention_mask, ...,
    power_bert_mask=mask2d, power_bert_retention=r, power_bert_record=record)``; the 2-D
    key-padding mask travels in ``power_bert_mask`` (the PoWER model passes ``attention_mask=None``
    to Hugging Face so that no [B, 1, N, N] mask is built). ``power_config`` is the owning PoWER
    model's :class:`PowerBertConfig`.
    """

    def __init__(self, original: nn.Module, config, family: str, power_config):
        super().__init__()
        self.config = config
        self.power_config = power_config
        self.adapter = ADAPTERS[family]
        for name, child in original.named_children():
            self.add_module(name, child)
        layers = self.adapter.layers(self, config)
        for layer in layers:
            self.adapter.check_layer(layer)
        # Plain list (not a ModuleList): the layers are registered through the adopted children,
        # and ALBERT applies one shared layer several times.
        self._layers = layers
        self.num_heads = int(config.num_attention_heads)
        self.head_dim = int(config.hidden_size) // self.num_heads

    def forward(self, hidden_states, attention_mask=None, *args, power_bert_mask=None, power_bert_retention=None,
                power_bert_record: EncoderRecord | None = None, **kwargs):
        x = self.adapter.pre(self, hidden_states)
        if self.power_config.mode == "soft" and power_bert_retention is None:
            raise ValueError("PoWER-BERT: soft mode needs the retention parameters; call the PoWER-BERT model, not "
                             "the wrapped Hugging Face model")
        mask = power_bert_mask
        if mask is None and attention_mask is not None:
            mask = _mask_from_hf(attention_mask, x.shape[1])
        record = self.run(x, mask, power_bert_retention, power_bert_record)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=record.last_hidden_state)

    def _use_fused(self, x: torch.Tensor) -> bool:
        choice = self.power_config.power_attention
        if choice == "auto":
            return attention_kernel_runs(x.device, x.dtype, self.head_dim)
        return choice == "fused"

    def _attention(self, layer, x, mask, sdpa_mask, significance: bool, fused: bool, row_weight=None,
                   differentiable: bool = False):
        """Layer attention on x [B, n, D] (row_weight: None or float [B, n]; differentiable: the
        significance with its gradient; both on the eager path, see :func:`eager_attention`)
        -> (context [B, n, D], significance f32 [B, n] or None)."""
        B, n, D = x.shape
        q, k, v = (w(x).view(B, n, self.num_heads, self.head_dim).transpose(1, 2) for w in self.adapter.qkv(layer))
        p = self.adapter.attention_dropout(layer) if self.training else 0.0
        exclude_self = self.power_config.exclude_self
        sig = None
        if significance and fused and row_weight is None and not differentiable:
            ctx, sig = _ops_ns.attention(q, k, v, mask, p, True, exclude_self)
        elif significance:
            ctx, sig = eager_attention(q, k, v, mask, p, exclude_self, row_weight, differentiable)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, dropout_p=p)
        return ctx.transpose(1, 2).reshape(B, n, D), sig

    def run(self, x, mask, retention_params=None, record: EncoderRecord | None = None) -> EncoderRecord:
        """The PoWER-BERT encoder (SPEC 1.2 / 1.3). x [B, n, D] after the embeddings (and any
        input projection), mask [B, n] key padding or None (all real), ``retention_params``
        [L, N] (soft mode) -> ``record`` (a new one when None) with ``last_hidden_state``
        [B, n_L, D]. Hard mode with relative retention keeps :func:`relative_rows` of each
        example, an output width of min(rows in, max(min_rows, ceil(ℓ_j·n/N))) for an input of n
        rows (eager on the CPU, with ``min_rows_max_length``: max(1, ...) when no example is that
        short). Hard mode
        with ``thresholds`` keeps :func:`threshold_rows` in the layers whose θ_j is set (the
        width is the batch's largest count, read on the host) and every row elsewhere. Soft mode
        with ``soft_like_hard`` ranks [CLS] first and weights each row, as a key and as a query of
        the significance, by the product of its factors so far (:func:`eager_attention`)."""
        cfg = self.power_config
        mode, retention = cfg.mode, cfg.retention
        thresholds = cfg.thresholds if mode == "hard" else None
        record = EncoderRecord() if record is None else record
        if record.hidden_states is not None:
            record.hidden_states.append(x)
        B, n, D = x.shape
        fused = self._use_fused(x)
        relative = cfg.retention_scale == "relative" and mode != "full"
        relative_n = cfg.sequence_length if relative else None
        # Per-example row counts leave padding slots in the kept rows of relative hard mode.
        all_real = mask is None and not ((relative or thresholds is not None) and mode == "hard")
        if mask is None and mode != "full":
            mask = torch.ones((B, n), dtype=torch.bool, device=x.device)
        lengths = (mask != 0).sum(dim=1) if relative else None
        # floor: the most rows a floor makes an example keep (the width room hard mode leaves);
        # floors: each example's floor, int64 [B] where it depends on the length (row_floors)
        floor = floors = rows_floor(cfg.retention_scale, cfg.min_rows)
        short = cfg.min_rows_max_length
        if relative and floor > 1 and short is not None:
            floors = row_floors(lengths, cfg.retention_scale, cfg.min_rows, short)
            if mode == "hard" and thresholds is None and lengths.device.type == "cpu" and not _no_data(lengths) \
                    and n > short:
                # eager on the CPU: a batch without a short example needs no room for the floor
                # (a read that would synchronise a GPU, which keeps the room instead)
                floor = floor if bool((lengths <= short).any()) else 1
        if thresholds is not None:
            widths = [(None, theta is not None) for theta in thresholds]
        else:
            widths = hard_widths(retention, n, relative_n, floor) if mode == "hard" else None
        sdpa_mask = None if all_real else (mask != 0)[:, None, None, :]
        like_hard = mode == "soft" and cfg.soft_like_hard
        row_weight = None  # soft_like_hard: each row's product of factors so far, float32 [B, n]
        for j, layer in enumerate(self._layers):
            keep, eliminate = widths[j] if widths is not None else (n, False)
            graded = eliminate and record.significance_grad is not None
            ctx, sig = self._attention(layer, x, mask, sdpa_mask, eliminate or mode == "soft", fused, row_weight, graded)
            if record.significance_grad is not None:
                record.significance_grad.append(sig if graded else None)
            if graded:
                sig = sig.detach()
            if record.significance is not None:
                record.significance.append(sig)
            residual, index = x, None
            if eliminate:
                # SPEC 1.2 shortcut: select on the attention context, gather the residual alike,
                # then W_o, LayerNorm and the FFN run on `keep` rows only.
                if thresholds is not None:
                    row_k = threshold_rows(sig, mask, thresholds[j], floors)
                    keep = int(row_k.max())
                else:
                    row_k = relative_rows(retention[j], lengths, relative_n, floors) if relative else None
                ctx, index, mask = _ops_ns.extract_scored(ctx, sig, mask, keep, row_k)
                residual = x.gather(1, index.unsqueeze(-1).expand(B, keep, D))
                n = keep
                if not all_real:
                    sdpa_mask = (mask != 0)[:, None, None, :]
            x = self.adapter.attention_output(layer, ctx, residual)
            if like_hard:  # [CLS] ranks first, as hard mode keeps it
                sig = sig.index_fill(1, torch.zeros(1, dtype=torch.long, device=sig.device),
                                     torch.finfo(sig.dtype).max)
            if mode == "soft" and (relative or like_hard):
                if relative:
                    factor = relative_soft_factor(retention_params[j], sig, mask, lengths, floors)
                else:
                    factor = retention_params[j, :n].float()[rank_of(sig, mask)]
                x = x * factor.to(x.dtype)[:, :, None]
                if like_hard:  # the row's factors so far weight it in the next layers' attention
                    row_weight = factor if row_weight is None else row_weight * factor
            elif mode == "soft":
                x = _ops_ns.soft_extract(x, sig, mask, retention_params[j, :n])
            x = self.adapter.feed_forward(layer, x)
            record.add_layer(x, index, mask)
        record.last_hidden_state = x
        return record
