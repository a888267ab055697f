"""PoWER-BERT models built from any supported Hugging Face BERT-family checkpoint.

Design: a PoWER model holds the ordinary Hugging Face model (``AutoModelForSequenceClassification``
or ``AutoModelForMultipleChoice`` built from the checkpoint's own config, attribute ``model``) and
replaces only its encoder with :class:`PowerBertEncoder`. That encoder takes over the original
encoder's submodules (same parameter names) and runs the PoWER layer loop of SPEC 1.2 through a
per-family adapter (``adapters.py``). Embeddings, poolers, heads, losses and the multiple-choice
reshaping are Hugging Face's own: heads read row 0 only, and [CLS] stays at row 0.

Modes (``set_mode``):

* ``full``: no elimination (scaled_dot_product_attention in every layer).
* ``soft``: stage 2 of the paper. Every layer computes significance and multiplies the row ranked
  t by the retention parameter r_j[t] (``soft_extract``). ``retention_loss(lam)`` is the
  λ·Σ_j j·mass_j term, ``clamp_retention_()`` the projection onto [0, 1].
* ``hard``: layer j keeps ℓ_j rows (capped at the batch's length for dynamic padding).
  Significance is computed only in layers that eliminate (ℓ_j < rows in); selection and the W_o /
  residual gather shortcut use ``torch.ops.power_bert.extract_scored`` and one gather.

Attention in the layers that need significance (``config.power_attention``):

* ``fused``: ``torch.ops.power_bert.attention``, which never stores the N x N probabilities
  (C++ on CPU, Triton on CUDA).
* ``eager``: the probabilities [B, H, n, n] are formed (softmax in float32), significance is
  ``torch.ops.power_bert.significance`` of them, and the output is their product with V.
* ``auto`` (default): ``fused`` where the device's fused kernel takes the input (CPU: always;
  CUDA: triton installed, head size 32/64/128, fp16/bf16/fp32), ``eager`` otherwise.

The forward pass of every mode has static per-layer shapes (they depend only on ℓ and the
padded input length) and never reads tensor data on the host, so ``torch.compile`` and CUDA
graphs work. Significance excludes padded query rows and (by default) self-attention (SPEC 1.1).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from .. import ops as _ops  # noqa: F401  (registers torch.ops.power_bert: kernels, fake kernels, autograd)
from .._backend import attention_kernel_runs as fused_attention_runs
from ..flops import check_scale
from .adapters import ADAPTERS
from .configuration_power_bert import (
    MODES,
    PowerBertConfig,
    base_config_from_dict,
    check_power_attention,
    check_retention,
    check_supported,
    derive_retention,
    max_positions,
    num_power_layers,
)

__all__ = [
    "PowerBertEncoder",
    "PowerBertForMultipleChoice",
    "PowerBertForSequenceClassification",
    "PowerBertPreTrainedModel",
]

# The model calls the public ops, as a user does; which kernel runs on each device is decided
# once in power_bert_ops._backend. fused_attention_runs (its attention_kernel_runs) says whether
# the fused attention has a kernel for the input: power_attention='auto' uses it to choose
# between the 'fused' and 'eager' paths.
_ops_ns = torch.ops.power_bert


def eager_attention(q, k, v, mask, dropout_p: float, exclude_self: bool):
    """The eager-probabilities path: softmax probabilities [B, H, n, n] (in float32, then q's
    dtype), SPEC 1.1 significance of them (no gradient), and their (dropped-out) product with v.

    q, k, v [B, H, n, d], mask [B, n] key padding -> (out [B, H, n, d], significance f32 [B, n])."""
    logits = torch.matmul(q, k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)
    logits = logits.masked_fill((mask == 0)[:, None, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1).to(q.dtype)
    sig = _ops_ns.significance(probs.detach(), mask, exclude_self)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p, training=True)
    return torch.matmul(probs, v), sig


_UNSET = object()
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class PowerBertEncoder(nn.Module):
    """Drop-in replacement of a Hugging Face encoder (BertEncoder, RobertaEncoder, ElectraEncoder,
    AlbertTransformer) running the PoWER-BERT layer loop. It adopts the original encoder's
    children under their own names, so parameter names (and checkpoints) are unchanged.

    Called by the Hugging Face base model as ``encoder(hidden_states, attention_mask, ...,
    power_bert_mask=mask2d, power_bert_retention=r)``; the 2-D key-padding mask travels in
    ``power_bert_mask`` (the PoWER model passes ``attention_mask=None`` to Hugging Face so that
    no [B, 1, N, N] mask is built). ``mode``, ``retention`` and ``exclude_self`` are plain Python
    attributes set by :meth:`PowerBertPreTrainedModel.set_mode`.
    """

    def __init__(self, original: nn.Module, config, family: str):
        super().__init__()
        self.config = config
        self.family = family
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
        self.mode = "full"
        self.retention: list[int] | None = None
        self.retention_scale = "absolute"  # "absolute" | "relative" (configuration_power_bert)
        self.sequence_length: int | None = None  # N, the denominator of relative retention
        self.exclude_self = True
        self.power_attention = "auto"  # "auto" | "fused" | "eager"; set by the PoWER model per forward
        self.collect_hidden_states: list | None = None  # set by the PoWER model for output_hidden_states
        self.collect_kept: list | None = None  # set by power_bert_ops.explain: kept positions per layer

    def forward(self, hidden_states, attention_mask=None, *args, power_bert_mask=None, power_bert_retention=None,
                **kwargs):
        x = self.adapter.pre(self, hidden_states)
        if self.mode == "soft" and power_bert_retention is None:
            raise ValueError("PoWER-BERT: soft mode needs the retention parameters; call the PoWER-BERT model, not "
                             "the wrapped Hugging Face model")
        mask = power_bert_mask
        if mask is None and attention_mask is not None:
            mask = _mask_from_hf(attention_mask, x.shape[1])
        y = power_encoder_loop(
            x, mask, self._layers, self.adapter, self.num_heads, self.head_dim, self.mode, self.retention,
            power_bert_retention, self.exclude_self, self.training, collect=self.collect_hidden_states,
            power_attention=self.power_attention, collect_kept=self.collect_kept,
            relative_n=self.sequence_length if self.retention_scale == "relative" else None,
        )
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=y)


def _mask_from_hf(attention_mask: torch.Tensor, n: int) -> torch.Tensor:
    """2-D key mask from a mask Hugging Face prepared: 2-D as is; 4-D bool (True = attend) or
    additive float (0 = attend): row 0 of the first head."""
    if attention_mask.dim() == 2:
        return attention_mask
    m = attention_mask[:, 0, 0, :n] if attention_mask.dim() == 4 else attention_mask.reshape(-1, n)
    if m.dtype == torch.bool:
        return m
    return m > torch.finfo(m.dtype).min / 2 if m.is_floating_point() else m != 0


def relative_rows(retention_j: int, lengths: torch.Tensor, n_cfg: int) -> torch.Tensor:
    """Relative retention (SPEC 1.6): rows kept of each example, min(len, max(1, ceil(ℓ_j·len/N))),
    in integers. lengths int64 [B] -> int64 [B]."""
    k = (lengths * int(retention_j) + (n_cfg - 1)) // n_cfg
    return torch.minimum(k.clamp(min=1), lengths)


def relative_soft_factor(retention_row: torch.Tensor, sig: torch.Tensor, mask: torch.Tensor,
                         lengths: torch.Tensor) -> torch.Tensor:
    """Stage 2 for relative retention: the row ranked t of an example with len real tokens gets
    r_j[floor(t·N/len)], so mass_j / N is the kept fraction. -> float32 [B, n] (differentiable in
    ``retention_row`` [N])."""
    from ..reference import rank_of

    n_cfg = retention_row.shape[0]
    rank = rank_of(sig, mask)
    bins = torch.div(rank * n_cfg, lengths.clamp(min=1)[:, None], rounding_mode="floor").clamp(max=n_cfg - 1)
    return retention_row[bins]


def power_encoder_loop(x, mask, layers, adapter, num_heads, head_dim, mode, retention, retention_params,
                       exclude_self, training, collect: list | None = None, power_attention: str = "auto",
                       collect_kept: list | None = None, relative_n: int | None = None):
    """The PoWER-BERT encoder (SPEC 1.2 / 1.3). x [B, n, D] after the embeddings (and any input
    projection), mask [B, n] key padding or None (all real) -> last hidden states [B, n_L, D].
    ``collect``, when a list, receives the encoder input and every layer's output (layer j's
    holds its kept rows, [B, ℓ_j, D] in hard mode). ``collect_kept``, when a list, receives one
    entry per layer: the int64 [B, ℓ_j] positions (among the layer's input rows) it kept, or None
    where it kept every row. ``power_attention``: see the module docstring. ``relative_n``: N of
    relative retention (layer j keeps :func:`relative_rows` of each example, an output width of
    min(rows in, ceil(ℓ_j·n/N)) for an input of n rows), or None for absolute ℓ_j."""
    B, n, D = x.shape
    if collect is not None:
        collect.append(x)
    if power_attention == "auto":
        fused = fused_attention_runs(x.device, x.dtype, head_dim)
    else:
        fused = power_attention == "fused"
    all_real = mask is None
    if all_real and mode != "full":
        mask = torch.ones((B, n), dtype=torch.bool, device=x.device)
    relative = relative_n is not None and mode != "full"
    lengths = (mask != 0).sum(dim=1) if relative else None
    if relative and mode == "hard":
        all_real = False  # per-example row counts leave padding slots in the kept rows
    n0, prev_ell = n, relative_n
    sdpa_mask = None if all_real else (mask != 0)[:, None, None, :]
    for j, layer in enumerate(layers):
        q_lin, k_lin, v_lin = adapter.qkv(layer)
        p = adapter.attention_dropout(layer) if training else 0.0
        q = q_lin(x).view(B, n, num_heads, head_dim).transpose(1, 2)
        k = k_lin(x).view(B, n, num_heads, head_dim).transpose(1, 2)
        v = v_lin(x).view(B, n, num_heads, head_dim).transpose(1, 2)
        row_k = None
        if mode != "hard":
            keep, eliminate = n, False
        elif relative:
            # Rows change only where ℓ_j drops; the width is the longest example's count.
            eliminate = retention[j] < prev_ell
            prev_ell = retention[j]
            width = (n0 * retention[j] + relative_n - 1) // relative_n
            if isinstance(width, torch.SymInt):
                # Under torch.export a width that may be 1 makes the layout guards fail; one more
                # slot (mask 0 where no row keeps it) changes no result.
                width = torch.sym_max(width, 2)
            keep = (torch.sym_min(width, n) if isinstance(n, torch.SymInt) or isinstance(width, torch.SymInt)
                    else min(width, n)) if eliminate else n
            row_k = relative_rows(retention[j], lengths, relative_n) if eliminate else None
        elif isinstance(n, torch.SymInt):
            # Dynamic length (torch.export): ℓ_j is capped at the row count inside the graph
            # (no guard on n), and a layer whose ℓ_j is at least every possible n keeps all rows.
            eliminate = not statically_known_true(retention[j] >= n)
            keep = torch.sym_min(retention[j], n) if eliminate else n
        else:
            keep = min(retention[j], n)
            eliminate = keep < n
        if (eliminate or mode == "soft") and fused:
            ctx, sig = _ops_ns.attention(q, k, v, mask, p, True, exclude_self)
        elif eliminate or mode == "soft":
            ctx, sig = eager_attention(q, k, v, mask, p, exclude_self)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(B, n, D)
        residual = x
        if eliminate:
            # SPEC 1.2 shortcut: select on the attention context, gather the residual alike,
            # then W_o, LayerNorm and the FFN run on `keep` rows only.
            ctx, index, mask = _ops_ns.extract_scored(ctx, sig, mask, keep, row_k)
            residual = x.gather(1, index.unsqueeze(-1).expand(B, keep, D))
            n = keep
            if not all_real:
                sdpa_mask = (mask != 0)[:, None, None, :]
        x = adapter.attention_output(layer, ctx, residual)
        if mode == "soft" and relative:
            x = x * relative_soft_factor(retention_params[j], sig, mask, lengths).to(x.dtype)[:, :, None]
        elif mode == "soft":
            x = _ops_ns.soft_extract(x, sig, mask, retention_params[j, :n])
        x = adapter.feed_forward(layer, x)
        if collect is not None:
            collect.append(x)
        if collect_kept is not None:
            collect_kept.append(index if eliminate else None)
    return x


class PowerBertPreTrainedModel(PreTrainedModel):
    """Shared machinery of the PoWER-BERT task models (see the module docstring)."""

    config_class = PowerBertConfig
    config: PowerBertConfig
    base_model_prefix = "power_bert"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _hf_auto_class = None  # AutoModelForSequenceClassification / AutoModelForMultipleChoice
    _input_dims = 2  # input_ids [B, N]; multiple choice: [B, C, N]

    def __init__(self, config: PowerBertConfig, hf_model: PreTrainedModel | None = None):
        super().__init__(config)
        if config.base_config is None:
            raise ValueError("PoWER-BERT: PowerBertConfig.base_config is required (the wrapped model's config)")
        if hf_model is None:
            hf_model = self._hf_auto_class.from_config(base_config_from_dict(config.base_config))
        family = check_supported(hf_model.config)
        base = getattr(hf_model, hf_model.base_model_prefix)
        if isinstance(base.encoder, PowerBertEncoder):
            raise ValueError("PoWER-BERT: this Hugging Face model is already wrapped by a PoWER-BERT model")
        base.encoder = PowerBertEncoder(base.encoder, hf_model.config, family)
        self._check_head(hf_model)
        self.model = hf_model
        L, N = num_power_layers(hf_model.config), config.sequence_length
        ref = next(hf_model.parameters())
        self.retention_params = nn.Parameter(torch.ones(L, N, dtype=torch.float32, device=ref.device))
        self.post_init()
        self._apply_mode(config.mode, config.retention)

    # ----------------------------------------------------------------------------------------
    # Construction, saving, loading
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, module):
        # Submodules of the wrapped Hugging Face model are initialised by its own _init_weights.
        if module is self:
            self.retention_params.fill_(1.0)

    def _check_head(self, hf_model):
        if getattr(hf_model.config, "model_type", None) == "electra" and hasattr(hf_model, "sequence_summary"):
            summary = getattr(hf_model.config, "summary_type", "first")
            if summary != "first":
                raise ValueError(f"PoWER-BERT: ELECTRA multiple choice with summary_type={summary!r} is not "
                                 "supported (it reads more than row 0); use summary_type='first'")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, retention=_UNSET, mode=None,
                        exclude_self=None, sequence_length=None, power_attention=None, retention_scale=None,
                        config=None, **kwargs):
        """Loads a PoWER-BERT model (safetensors only, never pickle).

        ``pretrained_model_name_or_path`` is a plain Hugging Face checkpoint of a supported
        family (bert, roberta, xlm-roberta, electra, albert; with or without a task head) or a
        saved PoWER-BERT directory. ``retention=[ℓ_1, ..., ℓ_L]`` gives ``hard`` mode,
        ``retention=None`` ``full`` mode; left out, a plain checkpoint loads in ``full`` mode and a
        PoWER-BERT one keeps its saved mode and configuration. ``mode='soft'`` starts stage 2.
        ``power_attention`` ('auto', 'fused' or 'eager') picks the attention of the layers that
        compute significance (module docstring). ``retention_scale`` ('absolute' or 'relative')
        says how ℓ is read (:class:`PowerBertConfig`). Other keyword arguments (num_labels,
        dtype, ...) go to Hugging Face's from_pretrained.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("PoWER-BERT loads safetensors checkpoints only (use_safetensors=False is not supported)")
        kwargs["use_safetensors"] = True
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if kwargs.get("trust_remote_code"):
            raise ValueError("PoWER-BERT: trust_remote_code is not supported")
        if config is None:
            hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        if isinstance(config, PowerBertConfig):
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)
        else:
            check_supported(config)
            kwargs.pop("_from_auto", None)
            hf_model = cls._hf_auto_class.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            pcfg = PowerBertConfig(base_config=hf_model.config.to_dict(), mode="full",
                                   sequence_length=sequence_length, name_or_path=str(pretrained_model_name_or_path))
            model = cls(pcfg, hf_model=hf_model)
            sequence_length = None
            if retention is _UNSET:
                retention = None
        model._apply_dtype(dtype)
        if sequence_length is not None and sequence_length != model.config.sequence_length:
            model.set_sequence_length(sequence_length)
        if exclude_self is not None:
            model.config.exclude_self = bool(exclude_self)  # applied by set_mode / _apply_mode below
        if power_attention is not None:
            model.config.power_attention = check_power_attention(power_attention)
        if retention_scale is not None:
            model.config.retention_scale = check_scale(retention_scale)
        if retention is not _UNSET:
            model.set_mode(mode or ("hard" if retention is not None else "full"), retention=retention)
        elif mode is not None:
            model.set_mode(mode)
        else:
            model._apply_mode(model.config.mode, model.config.retention)
        model.eval()
        return model

    def _apply_dtype(self, dtype) -> None:
        """``from_pretrained(..., dtype=...)``: the wrapped model's parameters in ``dtype`` (a
        torch.dtype, its name, or "auto": the dtype the checkpoint was saved in), recorded in
        both configs. The retention parameters stay float32 (SPEC 1.3 accumulates in fp32)."""
        if dtype is None:
            return
        if dtype == "auto":
            dtype = self.model.config.dtype or self.config.dtype or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"PoWER-BERT: dtype must be a floating torch.dtype, its name or 'auto'; got {dtype!r}")
        self.model.to(dtype)
        self.model.config.dtype = dtype
        self.config.dtype = dtype

    @classmethod
    def from_hf_model(cls, hf_model: PreTrainedModel, retention: Sequence[int] | None = None, mode: str | None = None,
                      exclude_self: bool = True, sequence_length: int | None = None, power_attention: str = "auto",
                      retention_scale: str = "absolute"):
        """Wraps an already-built Hugging Face model (its encoder is replaced in place: pass a
        copy to keep the original). ``retention`` gives ``hard`` mode unless ``mode`` says otherwise."""
        check_supported(hf_model.config)
        if mode is None:
            mode = "hard" if retention is not None else "full"
        pcfg = PowerBertConfig(base_config=hf_model.config.to_dict(), mode="full", exclude_self=exclude_self,
                               sequence_length=sequence_length, power_attention=power_attention,
                               retention_scale=retention_scale)
        model = cls(pcfg, hf_model=hf_model)
        model.set_mode(mode, retention=retention)
        model.train(hf_model.training)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Writes config.json (model_type power_bert, base config, retention, mode) and
        model.safetensors (the Hugging Face weights under ``model.`` plus ``retention_params``)."""
        if kwargs.get("safe_serialization") is False:
            raise ValueError("PoWER-BERT saves safetensors only (safe_serialization=False is not supported)")
        self.config.base_config = self.model.config.to_dict()
        os.makedirs(save_directory, exist_ok=True)
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ----------------------------------------------------------------------------------------
    # Modes and retention
    # ----------------------------------------------------------------------------------------
    def power_encoder(self) -> PowerBertEncoder:
        return getattr(self.model, self.model.base_model_prefix).encoder

    @property
    def num_power_layers(self) -> int:
        return self.retention_params.shape[0]

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def retention(self) -> list[int] | None:
        return self.config.retention

    def _apply_mode(self, mode: str, retention):
        enc = self.power_encoder()
        enc.mode = mode
        enc.retention = list(retention) if retention is not None else None
        enc.exclude_self = bool(self.config.exclude_self)
        enc.retention_scale = self.config.retention_scale
        enc.sequence_length = int(self.config.sequence_length)
        self.config.mode = mode
        self.config.retention = list(retention) if retention is not None else None
        self.retention_params.requires_grad_(mode == "soft")

    def set_mode(self, mode: str, retention: Sequence[int] | None = None, retention_scale: str | None = None):
        """Switches between ``full``, ``soft`` and ``hard``; returns self. ``retention_scale``
        ('absolute' or 'relative'), when given, sets how ℓ is read (and how soft mode ranks).

        ``hard`` takes ``retention`` when given; otherwise, coming from ``soft``, the
        configuration is derived from the retention parameters (SPEC 1.3,
        :meth:`derive_retention`); otherwise the configuration already in the config is used.
        """
        if mode not in MODES:
            raise ValueError(f"PoWER-BERT: mode must be one of {MODES}, got {mode!r}")
        if retention_scale is not None:
            self.config.retention_scale = check_scale(retention_scale)
        if mode == "hard":
            if retention is None:
                if self.config.mode == "soft":
                    retention = self.derive_retention()
                elif self.config.retention is not None:
                    retention = self.config.retention
                else:
                    raise ValueError("PoWER-BERT: mode='hard' needs a retention configuration: pass "
                                     "retention=[ℓ_1, ..., ℓ_L] (or switch from 'soft' to derive one)")
            retention = check_retention(retention, self.num_power_layers, self.config.sequence_length)
        elif retention is not None:
            retention = check_retention(retention, self.num_power_layers, self.config.sequence_length)
        else:
            retention = self.config.retention
        self._apply_mode(mode, retention)
        return self

    def set_sequence_length(self, n: int):
        """Sets N, the length of the retention parameters (reset to 1) and the bound on ℓ_j."""
        limit = max_positions(self.model.config)
        if not 1 <= int(n) <= limit:
            raise ValueError(f"PoWER-BERT: sequence_length = {n} must be in [1, {limit}]")
        if self.config.retention is not None:
            check_retention(self.config.retention, self.num_power_layers, int(n))
        self.config.sequence_length = int(n)
        p = self.retention_params
        self.retention_params = nn.Parameter(torch.ones(p.shape[0], int(n), dtype=p.dtype, device=p.device),
                                             requires_grad=p.requires_grad)
        return self

    def retention_parameters(self) -> list[nn.Parameter]:
        """The stage-2 retention parameters (their own optimiser group, no weight decay)."""
        return [self.retention_params]

    def retention_masses(self) -> torch.Tensor:
        """mass_j = Σ_t r_j[t], float32 [L] (differentiable)."""
        return self.retention_params.float().sum(dim=1)

    def retention_loss(self, lam: float) -> torch.Tensor:
        """The stage-2 loss term λ·Σ_{j=1..L} j·mass_j (differentiable in the retention parameters)."""
        masses = self.retention_masses()
        j = torch.arange(1, masses.shape[0] + 1, dtype=masses.dtype, device=masses.device)
        return lam * (j * masses).sum()

    @torch.no_grad()
    def clamp_retention_(self):
        """Projects the retention parameters onto [0, 1] (after every optimiser step)."""
        self.retention_params.clamp_(0.0, 1.0)
        return self

    @torch.no_grad()
    def reset_retention_params_(self):
        self.retention_params.fill_(1.0)
        return self

    def derive_retention(self) -> list[int]:
        """SPEC 1.3: ℓ_j = max(1, ceil(mass_j)), ℓ_j = min(ℓ_j, ℓ_{j-1}), ℓ_0 = N. Reads the
        parameters on the host (call it between steps, not inside a compiled region)."""
        masses = self.retention_params.detach().double().sum(dim=1).cpu().tolist()
        return derive_retention(masses, self.config.sequence_length)

    # ----------------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------------
    def _check_inputs(self, input_ids, inputs_embeds, attention_mask):
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None:
            raise ValueError("PoWER-BERT: pass input_ids or inputs_embeds")
        n = ref.shape[self._input_dims - 1]
        limit = max_positions(self.model.config)
        if n > limit:
            raise ValueError(f"PoWER-BERT: the input has {n} tokens per row but the position embeddings of this "
                             f"{self.model.config.model_type} model hold {limit}; truncate to at most {limit}")
        if self.config.mode == "soft" and n > self.config.sequence_length:
            raise ValueError(f"PoWER-BERT: soft mode has retention parameters for N = {self.config.sequence_length} "
                             f"positions but the input has {n}; truncate or set_sequence_length({n})")
        if attention_mask is not None and attention_mask.shape[-1] != n:
            raise ValueError(f"PoWER-BERT: attention_mask has {attention_mask.shape[-1]} positions but the input "
                             f"has {n}")
        return n

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs):
        """Same arguments and outputs as the wrapped Hugging Face model's forward."""
        n = self._check_inputs(input_ids, inputs_embeds, attention_mask)
        if kwargs.pop("output_attentions", None):
            raise NotImplementedError("PoWER-BERT: output_attentions=True is not supported (eliminating layers "
                                      "never form the attention probabilities)")
        want_hidden = bool(kwargs.pop("output_hidden_states", None) or self.config.output_hidden_states)
        mask = attention_mask.reshape(-1, n) if attention_mask is not None else None
        kwargs.pop("return_dict", None)
        encoder = self.power_encoder()
        encoder.power_attention = self.config.power_attention
        collected = [] if want_hidden else None
        encoder.collect_hidden_states = collected
        try:
            out = self.model(
                input_ids=input_ids, attention_mask=None, token_type_ids=token_type_ids, position_ids=position_ids,
                inputs_embeds=inputs_embeds, labels=labels, return_dict=True,
                power_bert_mask=mask, power_bert_retention=self.retention_params, **kwargs,
            )
        finally:
            encoder.collect_hidden_states = None
        if want_hidden:
            # (encoder input, layer 1, ..., layer L) as Hugging Face orders them; layer j's output
            # holds the rows it kept ([B, ℓ_j, D] in hard mode; [B*C, ...] for multiple choice).
            out.hidden_states = tuple(collected)
        return out


class PowerBertForSequenceClassification(PowerBertPreTrainedModel):
    """Single-sentence / sentence-pair classification and regression (num_labels=1), on the
    wrapped ``AutoModelForSequenceClassification``. Inputs [B, N]; logits [B, num_labels]."""

    _hf_auto_class = AutoModelForSequenceClassification
    _input_dims = 2


class PowerBertForMultipleChoice(PowerBertPreTrainedModel):
    """Multiple choice on the wrapped ``AutoModelForMultipleChoice``. Inputs [B, C, N]; logits [B, C]."""

    _hf_auto_class = AutoModelForMultipleChoice
    _input_dims = 3
