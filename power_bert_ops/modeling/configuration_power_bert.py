"""PowerBertConfig: a Hugging Face config that wraps any supported BERT-family config and adds
the PoWER-BERT retention configuration (SPEC 1.2-1.3).

The wrapped ("base") checkpoint's config is kept as a plain dict with its ``model_type`` in
``base_config``, so a saved PoWER-BERT directory rebuilds the exact Hugging Face model it came from.
"""
from __future__ import annotations

import math
from typing import Sequence

from transformers import AutoConfig, PreTrainedConfig

from ..flops import check_scale

__all__ = [
    "MODES",
    "POWER_ATTENTION",
    "check_power_attention",
    "PowerBertConfig",
    "SUPPORTED_MODEL_TYPES",
    "base_config_from_dict",
    "check_supported",
    "check_retention",
    "check_min_rows",
    "check_min_rows_max_length",
    "check_thresholds",
    "derive_retention",
    "max_positions",
    "num_power_layers",
]

MODES = ("full", "soft", "hard")
# The attention of the layers that compute significance (see modeling_power_bert).
POWER_ATTENTION = ("auto", "fused", "eager")


def check_power_attention(value: str) -> str:
    if value not in POWER_ATTENTION:
        raise ValueError(f"PoWER-BERT: power_attention must be one of {POWER_ATTENTION}, got {value!r}")
    return value

# model_type -> family of the per-layer adapter (see adapters.py).
SUPPORTED_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "albert": "albert",
}
_ROBERTA_POSITIONS = ("roberta", "xlm-roberta")  # positions start at pad_token_id + 1


def _get(cfg, name, default=None):
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


def check_supported(base) -> str:
    """Returns the adapter family of a base config (dict or PreTrainedConfig); ValueError naming
    the supported architectures otherwise."""
    model_type = _get(base, "model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"PoWER-BERT: unsupported checkpoint architecture model_type={model_type!r} "
            f"(architectures={_get(base, 'architectures')}); supported model types: "
            f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))}"
        )
    if _get(base, "is_decoder", False) or _get(base, "add_cross_attention", False):
        raise ValueError(f"PoWER-BERT: {model_type} configured as a decoder (is_decoder / add_cross_attention) is "
                         "not supported; PoWER-BERT needs a bidirectional encoder")
    pet = _get(base, "position_embedding_type", "absolute")
    if pet not in (None, "absolute"):
        raise ValueError(f"PoWER-BERT: position_embedding_type={pet!r} is not supported (only 'absolute')")
    return SUPPORTED_MODEL_TYPES[model_type]


def num_power_layers(base) -> int:
    """Number of encoder layers L that get a retention value (ALBERT: every application of a
    shared layer counts, num_hidden_layers * inner_group_num)."""
    L = int(_get(base, "num_hidden_layers"))
    if _get(base, "model_type") == "albert":
        L *= int(_get(base, "inner_group_num", 1) or 1)
    return L


def max_positions(base) -> int:
    """Longest input the position embeddings hold (RoBERTa-style models lose pad_token_id + 1)."""
    n = int(_get(base, "max_position_embeddings"))
    if _get(base, "model_type") in _ROBERTA_POSITIONS:
        n -= int(_get(base, "pad_token_id", 1) or 0) + 1
    return n


def check_retention(retention: Sequence[int], num_layers: int, n: int) -> list[int]:
    """Validates a retention configuration (ℓ_1..ℓ_L) and returns it as a list of ints.

    ValueError unless it has exactly ``num_layers`` integer entries with 1 <= ℓ_j <= n and
    ℓ_1 >= ℓ_2 >= ... >= ℓ_L.
    """
    if isinstance(retention, (str, bytes)) or not hasattr(retention, "__len__"):
        raise TypeError(f"PoWER-BERT: `retention` must be a sequence of ints, got {type(retention).__name__}")
    values = []
    for j, v in enumerate(retention, start=1):
        if isinstance(v, bool) or not isinstance(v, int) and not (hasattr(v, "__index__")):
            raise TypeError(f"PoWER-BERT: retention[{j}] must be an int, got {v!r}")
        values.append(int(v))
    if len(values) != num_layers:
        raise ValueError(
            f"PoWER-BERT: the retention configuration has {len(values)} entries but the model has {num_layers} "
            f"encoder layers; give exactly one ℓ_j per layer"
        )
    for j, v in enumerate(values, start=1):
        if not 1 <= v <= n:
            raise ValueError(f"PoWER-BERT: retention ℓ_{j} = {v} is outside [1, N] with N = {n} "
                             "(the sequence length the model is configured for)")
    for j in range(1, len(values)):
        if values[j] > values[j - 1]:
            raise ValueError(
                f"PoWER-BERT: the retention configuration must be non-increasing, but ℓ_{j + 1} = {values[j]} > "
                f"ℓ_{j} = {values[j - 1]}: {values}"
            )
    return values


def check_thresholds(thresholds: Sequence, num_layers: int) -> list:
    """Validates the threshold rule's θ_1..θ_L (None or a share in [0, 1)) and returns them as a
    list of floats and Nones."""
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__len__"):
        raise TypeError(f"PoWER-BERT: `thresholds` must be a sequence, got {type(thresholds).__name__}")
    if len(thresholds) != num_layers:
        raise ValueError(f"PoWER-BERT: `thresholds` has {len(thresholds)} entries but the model has {num_layers} "
                         "encoder layers; give one θ_j (or None) per layer")
    out = []
    for j, t in enumerate(thresholds, start=1):
        if t is None:
            out.append(None)
            continue
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) < 1.0:
            raise ValueError(f"PoWER-BERT: thresholds[{j}] = {t!r} must be None or a share of significance in [0, 1)")
        out.append(float(t))
    return out


def check_min_rows(value) -> int:
    """Validates relative retention's floor of rows: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"PoWER-BERT: min_rows must be a whole number >= 1, got {value!r}")
    return int(value)


def check_min_rows_max_length(value) -> int | None:
    """Validates the longest example the floor of rows holds for: None (every example) or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"PoWER-BERT: min_rows_max_length must be None (every example) or a whole number >= 1, "
                         f"got {value!r}")
    return int(value)


def derive_retention(masses: Sequence[float], n: int) -> list[int]:
    """SPEC 1.3: ℓ_j = max(1, ceil(mass_j)), then ℓ_j = min(ℓ_j, ℓ_{j-1}) with ℓ_0 = n."""
    out, prev = [], int(n)
    for m in masses:
        m = float(m)
        if math.isnan(m):
            raise ValueError("PoWER-BERT: a retention mass is NaN; cannot derive a configuration")
        lj = min(max(1, math.ceil(m)), prev)
        out.append(lj)
        prev = lj
    return out


def base_config_from_dict(d: dict) -> PreTrainedConfig:
    """Rebuilds the Hugging Face config saved in ``PowerBertConfig.base_config``."""
    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError("PoWER-BERT: base_config has no model_type")
    check_supported({"model_type": model_type, **d})
    for key in ("transformers_version", "_name_or_path"):
        d.pop(key, None)
    return AutoConfig.for_model(model_type, **d)


class PowerBertConfig(PreTrainedConfig):
    r"""Configuration of a PoWER-BERT model.

    Args:
        base_config (`dict`): the wrapped checkpoint's config (``config.to_dict()``, with its
            ``model_type``: one of bert, roberta, xlm-roberta, electra, albert).
        retention (`list[int]`, *optional*): the retention configuration ℓ_1 >= ... >= ℓ_L
            (one entry per encoder layer; ALBERT: per application of a shared layer).
        mode (`str`): ``"full"`` (no elimination), ``"soft"`` (stage-2 soft-extract with retention
            parameters) or ``"hard"`` (eliminate down to ℓ_j rows in layer j).
        exclude_self (`bool`): subtract each token's attention to itself from its significance.
        sequence_length (`int`, *optional*): N, the length of the retention parameters and the
            upper bound of every ℓ_j; defaults to the longest input the base model accepts.
        retention_scale (`str`): how ℓ_j is read: ``"absolute"`` (the paper: keep min(ℓ_j, rows
            in) rows of every example) or ``"relative"`` (keep min(len, max(min_rows,
            ceil(ℓ_j·len/N))) rows of an example with len real tokens: the fraction ρ_j = ℓ_j/N of
            its length).
        min_rows (`int`): relative retention keeps at least min(len, min_rows) rows of every
            example in every layer, so a text of a few tokens keeps its words past [CLS] and
            [SEP] (1: the fraction alone, SPEC 1.6). Absolute retention ignores it: ℓ_j is the
            row count there.
        min_rows_max_length (`int`, *optional*): the floor of ``min_rows`` holds for examples of at
            most this many real tokens ([CLS] and [SEP] included); a longer example keeps at least
            1 row, as its fraction already keeps its words. None: every example.
        power_attention (`str`): attention of the layers that compute significance: ``"fused"``
            (``power_bert.attention``, no N x N probabilities), ``"eager"`` (probabilities formed,
            then ``power_bert.significance``) or ``"auto"`` (fused where the device's kernel takes
            the input, eager otherwise).
        thresholds (`list[float | None]`, *optional*): the threshold rule in hard mode: layer j
            keeps the rows whose share of its example's significance exceeds θ_j (at least one),
            and every row where θ_j is None; ℓ then only records the configuration the thresholds
            were calibrated against. Eager PyTorch only (the widths are read on the host).
        soft_like_hard (`bool`): soft mode as a relaxation of hard mode's rows: [CLS] ranks
            first in every example (hard mode always keeps it), and each row's factors so far
            (the product of r_j[rank] over the layers it passed) weight it as a key in later
            layers' attention (log-weight added to the logits), so a row at factor 0 is gone from
            the attention as hard mode removes it. False: SPEC 1.3 as written ([CLS] ranked by its
            significance, scaled rows stay keys). The target search sets it; its attention is the
            eager path.
    """

    model_type = "power_bert"

    base_config: dict | None = None
    retention: list[int] | None = None
    mode: str = "full"
    exclude_self: bool = True
    sequence_length: int | None = None
    power_attention: str = "auto"
    retention_scale: str = "absolute"
    thresholds: list | None = None
    soft_like_hard: bool = False
    min_rows: int = 1
    min_rows_max_length: int | None = None

    def __post_init__(self, **kwargs):
        check_scale(self.retention_scale)
        if self.mode not in MODES:
            raise ValueError(f"PoWER-BERT: mode must be one of {MODES}, got {self.mode!r}")
        check_power_attention(self.power_attention)
        self.exclude_self = bool(self.exclude_self)
        self.soft_like_hard = bool(self.soft_like_hard)
        self.min_rows = check_min_rows(self.min_rows)
        self.min_rows_max_length = check_min_rows_max_length(self.min_rows_max_length)
        if self.base_config is not None:
            if not isinstance(self.base_config, dict):
                self.base_config = self.base_config.to_dict()
            check_supported(self.base_config)
            limit = max_positions(self.base_config)
            if self.sequence_length is None:
                self.sequence_length = limit
            if not 1 <= int(self.sequence_length) <= limit:
                raise ValueError(f"PoWER-BERT: sequence_length = {self.sequence_length} must be in [1, {limit}] "
                                 f"(the position embeddings of this {self.base_config['model_type']} model)")
            self.sequence_length = int(self.sequence_length)
            if self.retention is not None:
                self.retention = check_retention(self.retention, num_power_layers(self.base_config),
                                                 self.sequence_length)
            if self.thresholds is not None:
                self.thresholds = check_thresholds(self.thresholds, num_power_layers(self.base_config))
            # Mirror the classification fields so users and Trainer read them from the top config.
            for key in ("id2label", "label2id", "problem_type"):
                if self.base_config.get(key) is not None and key not in kwargs:
                    value = self.base_config[key]
                    if key == "id2label":
                        value = {int(k): v for k, v in value.items()}
                    setattr(self, key, value)
        if self.mode == "hard" and self.retention is None:
            raise ValueError("PoWER-BERT: mode='hard' needs a retention configuration (retention=[ℓ_1, ..., ℓ_L])")
        super().__post_init__(**kwargs)
