"""PoWER-BERT models built from any supported Hugging Face BERT-family checkpoint.

Design: a PoWER model holds the ordinary Hugging Face model (``AutoModelForSequenceClassification``
or ``AutoModelForMultipleChoice`` built from the checkpoint's own config, attribute ``model``) and
replaces only its encoder with :class:`~.encoder.PowerBertEncoder`. That encoder takes over the
original encoder's submodules (same parameter names), reads this model's config, and runs the
PoWER layer loop of SPEC 1.2 through a per-family adapter (``adapters.py``). Embeddings, poolers,
heads, losses and the multiple-choice reshaping are Hugging Face's own: heads read row 0 only, and
[CLS] stays at row 0.

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
graphs work; the one exception is hard mode with the threshold rule (``config.thresholds``),
whose widths are counts read on the host (eager only). Significance excludes padded query rows
and (by default) self-attention (SPEC 1.1).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)

from .._checks import LEFT_PADDED, _no_data
from ..flops import check_scale
from .adapters import set_attention_dropout
from .configuration_power_bert import (
    MODES,
    PowerBertConfig,
    base_config_from_dict,
    check_power_attention,
    check_min_rows,
    check_min_rows_max_length,
    check_retention,
    check_thresholds,
    check_supported,
    derive_retention,
    max_positions,
    num_power_layers,
)
from .encoder import EncoderRecord, PowerBertEncoder

__all__ = [
    "PowerBertForMultipleChoice",
    "PowerBertForSequenceClassification",
    "PowerBertPreTrainedModel",
]

_UNSET = object()
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


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
        base.encoder = PowerBertEncoder(base.encoder, hf_model.config, family, config)
        self._check_head(hf_model)
        self.model = hf_model
        L, N = num_power_layers(hf_model.config), config.sequence_length
        ref = next(hf_model.parameters())
        self.retention_params = nn.Parameter(torch.ones(L, N, dtype=torch.float32, device=ref.device))
        self.post_init()
        self._apply_mode(config.mode, config.retention)

    @property
    def dtype(self) -> torch.dtype:
        """The wrapped model's weights' dtype (``retention_params`` stay float32 whatever it is)."""
        return self.model.dtype

    def get_input_embeddings(self) -> nn.Module:
        """The wrapped model's word embeddings."""
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

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
                        min_rows=None, min_rows_max_length=_UNSET, config=None, **kwargs):
        """Loads a PoWER-BERT model (safetensors only, never pickle).

        ``pretrained_model_name_or_path`` is a plain Hugging Face checkpoint of a supported
        family (bert, roberta, xlm-roberta, electra, albert; with or without a task head) or a
        saved PoWER-BERT directory. ``retention=[ℓ_1, ..., ℓ_L]`` gives ``hard`` mode,
        ``retention=None`` ``full`` mode; left out, a plain checkpoint loads in ``full`` mode and a
        PoWER-BERT one keeps its saved mode and configuration. ``mode='soft'`` starts stage 2.
        ``power_attention`` ('auto', 'fused' or 'eager') picks the attention of the layers that
        compute significance (module docstring). ``retention_scale`` ('absolute' or 'relative')
        says how ℓ is read, ``min_rows`` is relative retention's floor of rows and
        ``min_rows_max_length`` the longest example it holds for (None: every one;
        :class:`PowerBertConfig`). Other keyword arguments (num_labels, dtype, ...) go to Hugging
        Face's from_pretrained; with ``output_loading_info=True`` it returns ``(model, info)``, as
        Hugging Face's does (``info["missing_keys"]``: the weights the checkpoint lacked, which
        hold fresh initial values, under the checkpoint's names).
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("PoWER-BERT loads safetensors checkpoints only (use_safetensors=False is not supported)")
        kwargs["use_safetensors"] = True
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        loading_info = bool(kwargs.pop("output_loading_info", False))
        if kwargs.get("trust_remote_code"):
            raise ValueError("PoWER-BERT: trust_remote_code is not supported")
        if config is None:
            hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        if isinstance(config, PowerBertConfig):
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config,
                                                  output_loading_info=True, **kwargs)
        else:
            check_supported(config)
            kwargs.pop("_from_auto", None)
            hf_model, info = cls._hf_auto_class.from_pretrained(pretrained_model_name_or_path, *model_args,
                                                                output_loading_info=True, **kwargs)
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
            model.config.exclude_self = bool(exclude_self)
        if power_attention is not None:
            model.config.power_attention = check_power_attention(power_attention)
        model._set_floor_options(retention_scale, min_rows, min_rows_max_length)
        if retention is not _UNSET:
            model.set_mode(mode or ("hard" if retention is not None else "full"), retention=retention)
        elif mode is not None:
            model.set_mode(mode)
        else:
            model._apply_mode(model.config.mode, model.config.retention)
        model.eval()
        return (model, info) if loading_info else model

    def _set_floor_options(self, retention_scale, min_rows, min_rows_max_length) -> None:
        """Checks and records the given ones of relative retention's settings (None, or _UNSET for
        ``min_rows_max_length``: leave it as it is)."""
        if retention_scale is not None:
            self.config.retention_scale = check_scale(retention_scale)
        if min_rows is not None:
            self.config.min_rows = check_min_rows(min_rows)
        if min_rows_max_length is not _UNSET:
            self.config.min_rows_max_length = check_min_rows_max_length(min_rows_max_length)

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
                      retention_scale: str = "absolute", min_rows: int = 1, min_rows_max_length: int | None = None):
        """Wraps an already-built Hugging Face model (its encoder is replaced in place: pass a
        copy to keep the original). ``retention`` gives ``hard`` mode unless ``mode`` says otherwise."""
        check_supported(hf_model.config)
        if mode is None:
            mode = "hard" if retention is not None else "full"
        pcfg = PowerBertConfig(base_config=hf_model.config.to_dict(), mode="full", exclude_self=exclude_self,
                               sequence_length=sequence_length, power_attention=power_attention,
                               retention_scale=retention_scale, min_rows=min_rows,
                               min_rows_max_length=min_rows_max_length)
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
        """Records the mode and configuration in the config (which the encoder reads) and lets
        the retention parameters train in soft mode only."""
        self.config.mode = mode
        self.config.retention = list(retention) if retention is not None else None
        self.retention_params.requires_grad_(mode == "soft")

    def set_mode(self, mode: str, retention: Sequence[int] | None = None, retention_scale: str | None = None,
                 min_rows: int | None = None, min_rows_max_length=_UNSET):
        """Switches between ``full``, ``soft`` and ``hard``; returns self. ``retention_scale``
        ('absolute' or 'relative'), when given, sets how ℓ is read (and how soft mode ranks);
        ``min_rows``, when given, relative retention's floor of rows, and ``min_rows_max_length``
        the longest example it holds for (None: every one; :class:`PowerBertConfig`).

        ``hard`` takes ``retention`` when given; otherwise, coming from ``soft``, the
        configuration is derived from the retention parameters (SPEC 1.3,
        :meth:`derive_retention`); otherwise the configuration already in the config is used.
        """
        if mode not in MODES:
            raise ValueError(f"PoWER-BERT: mode must be one of {MODES}, got {mode!r}")
        self._set_floor_options(retention_scale, min_rows, min_rows_max_length)
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

    def set_thresholds(self, thresholds: Sequence[float | None] | None):
        """Sets the threshold rule of hard mode (:class:`PowerBertConfig` ``thresholds``: layer j
        keeps the rows whose share of significance exceeds θ_j; None keeps every row), or turns it
        off with None; returns self."""
        self.config.thresholds = None if thresholds is None else check_thresholds(thresholds, self.num_power_layers)
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

    def set_attention_dropout(self, p: float) -> None:
        """Sets the dropout on attention probabilities to ``p`` in every layer and in the wrapped
        model's config (also recorded in ``config.base_config``, so a saved model keeps it)."""
        set_attention_dropout(self.model, p)
        self.config.base_config = self.model.config.to_dict()

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
    def project_retention_to_steps_(self, masses: torch.Tensor | None = None, min_mass: float = 1.0):
        """Projects each layer's retention vector onto a step of its mass (at least ``min_mass``):
        r_j[t] = clamp(mass_j − t, 0, 1), i.e. the ⌊mass_j⌋ top-ranked rows at 1, the next at the
        fractional part, the rest at 0. Soft mode then keeps whole rows, as hard mode does,
        instead of scaling every row down alike (which hides the rows' loss from the task and lets
        the mass fall without a configuration hard mode could run). The whole-row target search
        (``TargetController(steps=True)``) applies it after every optimiser step.

        Args:
            masses: float [L] or [L, 1], the masses to give the steps; None: each layer's mass of
                r clamped to [0, 1].
            min_mass: the smallest mass (1: every layer keeps at least one row).
        """
        r = self.retention_params
        r.clamp_(0.0, 1.0)
        mass = r.sum(dim=1, keepdim=True) if masses is None else masses.reshape(-1, 1).to(r.dtype).clone()
        mass.clamp_(min=float(min_mass))
        t = torch.arange(r.shape[1], dtype=r.dtype, device=r.device)
        r.copy_((mass - t).clamp_(0.0, 1.0))
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
        if attention_mask is not None and attention_mask.device.type == "cpu" and not _no_data(attention_mask):
            # Read on the host only where the mask already is (a CUDA mask would cost a sync).
            first = attention_mask.reshape(-1, n)[:, 0]
            if not bool((first != 0).all()):
                raise ValueError(f"PoWER-BERT: {LEFT_PADDED}")
        return n

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, power_bert_record: EncoderRecord | None = None, **kwargs):
        """Same arguments and outputs as the wrapped Hugging Face model's forward.
        ``power_bert_record``, when given, is filled with the encoder's record of this pass (the
        rows each layer kept; ``power_bert_ops.explain`` reads them)."""
        n = self._check_inputs(input_ids, inputs_embeds, attention_mask)
        if kwargs.pop("output_attentions", None):
            raise NotImplementedError("PoWER-BERT: output_attentions=True is not supported (eliminating layers "
                                      "never form the attention probabilities)")
        want_hidden = bool(kwargs.pop("output_hidden_states", None) or self.config.output_hidden_states)
        mask = attention_mask.reshape(-1, n) if attention_mask is not None else None
        kwargs.pop("return_dict", None)
        record = EncoderRecord() if power_bert_record is None else power_bert_record
        if want_hidden and record.hidden_states is None:
            record.hidden_states = []
        out = self.model(
            input_ids=input_ids, attention_mask=None, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, labels=labels, return_dict=True,
            power_bert_mask=mask, power_bert_retention=self.retention_params, power_bert_record=record, **kwargs,
        )
        if want_hidden:
            # (encoder input, layer 1, ..., layer L) as Hugging Face orders them; layer j's output
            # holds the rows it kept ([B, ℓ_j, D] in hard mode; [B*C, ...] for multiple choice).
            out.hidden_states = tuple(record.hidden_states)
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
