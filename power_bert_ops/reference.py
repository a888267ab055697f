"""Plain-PyTorch reference implementations of every ``power_bert`` op.

These are the executable definition of SPEC sections 1.1-1.3: obviously correct,
slow, differentiable through ordinary autograd. Tests compare every kernel against
them; benchmarks use them as the "PyTorch composition" baseline.

Shapes: batch ``B``, sequence ``N``, hidden ``D``, heads ``H``.

Ranking rule shared by every op (see :func:`rank_order`):
  * scores are compared as float32 (``-0.0 == 0.0``);
  * real tokens (``mask != 0``) outrank padding;
  * among real tokens a NaN score ranks below every number, ``-inf`` included;
  * ties break toward the lower position.
"""
from __future__ import annotations

import torch

__all__ = [
    "significance",
    "significance_with_grad",
    "rank_order",
    "select_positions",
    "kept_slots",
    "extract_out_mask",
    "rank_of",
    "extract_scored",
    "extract",
    "extract_backward",
    "soft_extract",
    "soft_extract_backward",
    "attention",
]


def significance(attn: torch.Tensor, mask: torch.Tensor, exclude_self: bool = True) -> torch.Tensor:
    """SPEC 1.1. attn [B, H, N, N] probabilities, mask [B, N] -> float32 [B, N].

    ``sig[b, k] = sum_h sum_{q real, q != k when exclude_self} A[b, h, q, k]``,
    accumulated in float32 (float64 for float64 input), ``-inf`` at padding keys.
    Padded query rows are excluded. The diagonal is skipped, not summed and subtracted, so a
    non-finite ``A[b, h, k, k]`` leaves column k finite (no ``inf - inf``).
    """
    return significance_with_grad(attn.detach(), mask, exclude_self)


def significance_with_grad(attn: torch.Tensor, mask: torch.Tensor, exclude_self: bool = True) -> torch.Tensor:
    """:func:`significance` with its gradient into ``attn`` (the eager attention path's, for
    ranking distillation)."""
    acc = torch.float64 if attn.dtype == torch.float64 else torch.float32
    real = mask != 0
    skip = ~real[:, None, :, None]  # padded query rows
    if exclude_self:
        n = attn.shape[-1]
        skip = skip | torch.eye(n, dtype=torch.bool, device=attn.device)
    sig = attn.to(acc).masked_fill(skip, 0.0).sum(dim=(1, 2))
    return sig.float().masked_fill(~real, float("-inf"))


def rank_order(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Positions of each row by descending rank. scores [B, N], mask [B, N] -> int64 [B, N].

    ``order[b, t]`` is the position ranked ``t`` in row ``b`` (rule in the module docstring).
    """
    s = scores.detach().float()
    real = mask != 0
    # group: 2 = real with a number, 1 = real with NaN, 0 = padding.
    group = torch.where(real, torch.where(torch.isnan(s), 1, 2), 0)
    value = torch.where(torch.isnan(s) | ~real, float("-inf"), s)
    order = torch.argsort(value, dim=-1, descending=True, stable=True)
    regroup = torch.argsort(group.gather(-1, order), dim=-1, descending=True, stable=True)
    return order.gather(-1, regroup)


def select_positions(scores: torch.Tensor, mask: torch.Tensor, k: int, row_k: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """SPEC 1.2 selection: position 0 plus the k-1 best other positions, ascending. -> int64 [B, k].

    ``row_k`` (int64 [B], 1 <= row_k[b] <= k), when given, is the number of rows row b keeps:
    its top ``row_k[b]`` positions (position 0 and the row_k[b]-1 best others) fill slots
    ``0 .. row_k[b]-1`` in ascending position order, and the next-ranked ``k - row_k[b]``
    positions fill the remaining slots, also ascending (their output mask is 0). With every
    ``row_k[b] == k`` this is the plain selection.

    Static shapes and no host synchronisation (usable inside a compiled or CUDA-graphed model):
    position 0 is moved to the front of the ranking by a stable sort on ``order != 0``."""
    order = rank_order(scores, mask)
    zero_first = torch.argsort((order != 0).to(torch.int8), dim=-1, stable=True)
    # The first k by gather, not slicing: slicing a symbolic k (torch.export) off a symbolic N
    # would guard k <= N.
    first_k = torch.arange(k, device=order.device).expand(order.shape[0], k)
    top = order.gather(-1, zero_first.gather(-1, first_k))
    if row_k is None:
        return top.sort(dim=-1).values
    n = scores.shape[1]
    # Kept positions sort before the others: offset the others by N, sort, remove the offset.
    dropped = ~kept_slots(row_k, k)
    return (top + dropped * n).sort(dim=-1).values % n


def kept_slots(row_k: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """bool [B, k]: slot i of row b holds a kept row (i < row_k[b]); None when ``row_k`` is None."""
    if row_k is None:
        return None
    # Both sides expanded to [B, k]: no broadcast of a k that may be 1 (torch.export would guard on it).
    B = row_k.shape[0]
    return torch.arange(k, device=row_k.device).unsqueeze(0).expand(B, k) < row_k.unsqueeze(1).expand(B, k)


def extract_scored(hidden: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, k: int,
                   row_k: torch.Tensor | None = None):
    """SPEC 1.2 from precomputed scores.

    hidden [B, N, D], scores [B, N], mask [B, N], optional ``row_k`` int64 [B] (rows kept per
    example, see :func:`select_positions`) -> (out [B, k, D], index int64 [B, k], out_mask [B, k]
    in mask's dtype: the gathered mask, 0 in slots at or beyond ``row_k[b]``). Differentiable in
    ``hidden``.
    """
    index = select_positions(scores, mask, k, row_k)
    out = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
    return out, index, extract_out_mask(mask, index, row_k)


_GATHER_DTYPES = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                  torch.float16, torch.bfloat16, torch.float32, torch.float64}
_INT_OF_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _supported(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` itself, or, for dtypes torch's gather / masked_fill have no kernel for (uint16/32/64,
    float8), a view of it as the signed integer of its width."""
    return mask if mask.dtype in _GATHER_DTYPES else mask.view(_INT_OF_WIDTH[mask.element_size()])


def gather_mask(mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``mask.gather(1, index)`` for every mask dtype."""
    return _supported(mask).gather(1, index).view(mask.dtype)


def extract_out_mask(mask: torch.Tensor, index: torch.Tensor, row_k: torch.Tensor | None = None) -> torch.Tensor:
    """extract's ``out_mask``: ``mask`` gathered at ``index`` [B, k], 0 in the slots at or beyond
    ``row_k[b]`` when ``row_k`` is given."""
    out_mask = _supported(mask).gather(1, index)
    if row_k is not None:
        out_mask = out_mask.masked_fill(~kept_slots(row_k, index.shape[1]), 0)
    return out_mask.view(mask.dtype)


def extract(hidden, attn, mask, k: int, exclude_self: bool = True, row_k: torch.Tensor | None = None):
    """SPEC 1.2: significance from attn [B, H, N, N], then :func:`extract_scored`."""
    return extract_scored(hidden, significance(attn, mask, exclude_self), mask, k, row_k)


def extract_backward(grad_out: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """The gradient of :func:`extract_scored`'s ``out`` with respect to ``hidden``.

    grad_out [B, k, D], index int64 [B, k] (unique per row), n = N -> [B, n, D] in grad_out's
    dtype: ``grad_out[b, i]`` at row ``index[b, i]``, zeros elsewhere."""
    B, k, D = grad_out.shape
    zeros = grad_out.new_zeros((B, n, D))
    return zeros.scatter(1, index[:, :, None].expand(-1, -1, D), grad_out)


def rank_of(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rank[b, p] = the rank of position p in row b (inverse of :func:`rank_order`). -> int64 [B, N]."""
    B, N = scores.shape
    order = rank_order(scores, mask)
    ranks = torch.arange(N, device=scores.device).expand(B, N)
    return torch.empty_like(order).scatter_(1, order, ranks)


def soft_extract(hidden: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, retention: torch.Tensor):
    """SPEC 1.3. ``out[b, p] = hidden[b, p] * retention[rank_b(p)]``.

    hidden [B, N, D], scores [B, N], mask [B, N], retention [N] -> [B, N, D] in hidden's
    dtype, computed in float32 (float64 when hidden is float64). Differentiable in
    ``hidden`` and ``retention``.
    """
    acc = torch.promote_types(hidden.dtype, torch.float32)
    factor = retention.to(acc)[rank_of(scores, mask)]
    return (hidden.to(acc) * factor[:, :, None]).to(hidden.dtype)


def soft_extract_backward(grad_out: torch.Tensor, hidden: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
                          retention: torch.Tensor):
    """The gradients of :func:`soft_extract` in closed form, computed like it (float32, float64
    for float64 hidden): -> (grad_hidden [B, N, D] in hidden's dtype, grad_retention [N] in
    retention's dtype), ``grad_retention[t] = sum over (b, p) ranked t of <grad_out[b, p], hidden[b, p]>``."""
    N = scores.shape[1]
    acc = torch.promote_types(hidden.dtype, torch.float32)
    rank = rank_of(scores, mask)
    g = grad_out.to(acc)
    grad_hidden = (g * retention.to(acc)[rank][:, :, None]).to(hidden.dtype)
    per_row = (g * hidden.to(acc)).sum(dim=-1)
    grad_retention = per_row.new_zeros(N).index_add_(0, rank.flatten(), per_row.flatten())
    return grad_hidden, grad_retention.to(retention.dtype)


def attention(q, k, v, mask, dropout_p: float = 0.0, need_significance: bool = True, exclude_self: bool = True,
              dropout_mask=None):
    """Eager softmax attention that also returns SPEC 1.1 significance (the O(N^2) path).

    q, k, v [B, H, N, d] (scaled_dot_product_attention's layout), mask [B, N] key padding ->
    (out [B, H, N, d] in q's dtype, significance float32 [B, N], or an empty [0] tensor when
    ``need_significance`` is False). Scale 1/sqrt(d). Significance comes from the un-dropped
    probabilities. ``dropout_mask`` [B, H, N, N] bool (True = keep) replaces random dropout, so
    a test can replay the exact mask a kernel used; kept probabilities are scaled by 1/(1-p).
    Padded query rows attend normally (their outputs are don't-care; they are excluded from
    significance).
    """
    acc = torch.promote_types(q.dtype, torch.float32)
    real = mask != 0
    scale = q.shape[-1] ** -0.5
    logits = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    logits = logits.masked_fill(~real[:, None, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    sig = significance(probs, mask, exclude_self) if need_significance else q.new_empty((0,), dtype=torch.float32)
    dropped = probs
    if dropout_mask is not None:
        dropped = probs * dropout_mask.to(acc) / (1.0 - dropout_p)
    elif dropout_p > 0.0:
        dropped = torch.nn.functional.dropout(probs, dropout_p)
    return torch.matmul(dropped, v.to(acc)).to(q.dtype), sig


# ------------------------------------------------------------------------------------------------
# The model: PoWER-BERT (SPEC 1.2 / 1.3) over a Hugging Face classifier, layer by layer
# ------------------------------------------------------------------------------------------------
__all__ += ["model_logits"]


def model_logits(hf, retention, input_ids, attention_mask=None, token_type_ids=None, exclude_self: bool = True,
                 soft=None, attend=attention, select=extract_scored, gather_before_wo: bool = False):
    """PoWER-BERT's logits in plain PyTorch, over the Hugging Face classifier ``hf`` of a supported
    family (sequence classification, inputs [B, N]; multiple choice, inputs [B, C, N]), reaching
    its layers through the model's adapters (``power_bert_ops.modeling.adapters``).

    Every layer: eager attention probabilities and their significance (``attend``, with
    :func:`attention`'s signature), x' = LayerNorm(x + W_o a); in layers with ℓ_j below the rows
    in, [CLS] and the ℓ_j - 1 most significant other rows of x' (``select``, with
    :func:`extract_scored`'s signature); the FFN on the kept rows. ``gather_before_wo``: SPEC
    1.2's shortcut instead (select on the attention context a, gather the residual alike, then
    W_o and LayerNorm on the kept rows only; same result, fewer FLOPs). ``soft`` [L, N]
    (retention parameters, SPEC 1.3) instead scales x' by :func:`soft_extract` in every layer.
    ``retention`` None and ``soft`` None: no elimination, Hugging Face's own logits. The
    benchmarks pass faster compositions as ``attend`` / ``select``, with the shortcut."""
    from .modeling.adapters import ADAPTERS
    from .modeling.configuration_power_bert import check_supported

    adapter = ADAPTERS[check_supported(hf.config)]
    shape, n = input_ids.shape, input_ids.shape[-1]
    mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).reshape(-1, n)
    base = hf.base_model
    x = base.embeddings(input_ids=input_ids.reshape(-1, n),
                        token_type_ids=token_type_ids.reshape(-1, n) if token_type_ids is not None else None)
    if hasattr(base, "embeddings_project"):
        x = base.embeddings_project(x)
    x = adapter.pre(base.encoder, x)
    H = hf.config.num_attention_heads
    for j, layer in enumerate(adapter.layers(base.encoder, hf.config)):
        B, n, D = x.shape
        q, k, v = (w(x).view(B, n, H, D // H).transpose(1, 2) for w in adapter.qkv(layer))
        keep = n if retention is None else min(retention[j], n)
        ctx, sig = attend(q, k, v, mask, 0.0, keep < n or soft is not None, exclude_self)
        ctx = ctx.transpose(1, 2).reshape(B, n, D)
        if keep < n and gather_before_wo:
            ctx, index, mask = select(ctx, sig, mask, keep)
            x = adapter.attention_output(layer, ctx, x.gather(1, index[:, :, None].expand(-1, -1, D)))
        else:
            x = adapter.attention_output(layer, ctx, x)
            if keep < n:
                x, _, mask = select(x, sig, mask, keep)
        if soft is not None:
            x = soft_extract(x, sig, mask, soft[j, :n])
        x = adapter.feed_forward(layer, x)
    logits = _head(hf, x, multiple_choice=len(shape) == 3)
    return logits.view(shape[0], -1) if len(shape) == 3 else logits


def _head(hf, x: torch.Tensor, multiple_choice: bool) -> torch.Tensor:
    """The Hugging Face head of ``hf`` on last hidden states x [B', n, D] (it reads row 0)."""
    mt, base = hf.config.model_type, hf.base_model
    if mt == "bert":
        return hf.classifier(hf.dropout(base.pooler(x)))
    if mt == "albert":
        return hf.classifier(hf.dropout(base.pooler_activation(base.pooler(x[:, 0]))))
    if mt in ("roberta", "xlm-roberta"):
        return hf.classifier(hf.dropout(base.pooler(x))) if multiple_choice else hf.classifier(x)
    if mt == "electra":
        return hf.classifier(hf.sequence_summary(x)) if multiple_choice else hf.classifier(x)
    raise ValueError(f"reference.model_logits: no head for model_type={mt!r}")
