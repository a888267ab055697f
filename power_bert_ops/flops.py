"""SPEC 3: the FLOP model of a PoWER-BERT encoder and the speed-up bound it implies.

Per encoder j with n_in = ℓ_{j-1} rows in and n_out = ℓ_j rows kept (multiply-adds):

    macs_j = 3·n_in·D² (QKV) + 2·n_in²·D (QKᵀ, PV) + n_out·D² (W_o) + 2·n_out·D·F (FFN)

with F the FFN width (4·D in BERT, which gives SPEC's 8·n_out·D²). The bound on the speed-up is
Σ_j macs_j(N, N) / Σ_j macs_j(ℓ_{j-1}, ℓ_j).
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["encoder_macs", "flop_bound", "layer_macs", "retention_for_bound"]


def layer_macs(n_in: int, n_out: int, hidden: int, ffn: int | None = None) -> int:
    """Multiply-adds of one encoder layer with n_in rows in and n_out rows kept."""
    D = int(hidden)
    F = 4 * D if ffn is None else int(ffn)
    return 3 * n_in * D * D + 2 * n_in * n_in * D + n_out * D * D + 2 * n_out * D * F


def _dims(config_or_dims):
    """(D, L or None, F or None) from a config (PowerBertConfig, Hugging Face config, dict), a
    (D, L) / (D, L, F) tuple, or an int D."""
    if isinstance(config_or_dims, int):
        return config_or_dims, None, None
    if isinstance(config_or_dims, (tuple, list)):
        vals = list(config_or_dims) + [None] * (3 - len(config_or_dims))
        return int(vals[0]), (int(vals[1]) if vals[1] is not None else None), (int(vals[2]) if vals[2] else None)
    cfg = config_or_dims
    base = cfg.get("base_config") if isinstance(cfg, dict) else getattr(cfg, "base_config", None)
    if base is not None:
        cfg = base
    get = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    D, L, F = get("hidden_size"), get("num_hidden_layers"), get("intermediate_size")
    if D is None:
        raise ValueError("flop_bound: the config has no hidden_size")
    if get("model_type") == "albert" and L is not None:
        L = int(L) * int(get("inner_group_num", 1) or 1)
    return int(D), (int(L) if L is not None else None), (int(F) if F is not None else None)


def encoder_macs(config_or_dims, retention: Sequence[int] | None, N: int) -> int:
    """Σ_j macs_j for inputs of N rows; retention None = no elimination."""
    D, L, F = _dims(config_or_dims)
    if retention is None:
        if L is None:
            raise ValueError("encoder_macs: give the number of layers (a config or (D, L)) when retention is None")
        retention = [N] * L
    if L is not None and len(retention) != L:
        raise ValueError(f"flop_bound: the retention configuration has {len(retention)} entries but the model has "
                         f"{L} layers")
    total, n_in = 0, int(N)
    for lj in retention:
        n_out = min(int(lj), n_in)  # rows never grow back; ℓ_j beyond the input keeps everything
        total += layer_macs(n_in, n_out, D, F)
        n_in = n_out
    return total


def flop_bound(config_or_dims, retention: Sequence[int], N: int) -> float:
    """SPEC 3 speed-up bound Σ_j macs_j(N, N) / Σ_j macs_j(ℓ_{j-1}, ℓ_j).

    ``config_or_dims``: a PowerBertConfig, a Hugging Face config or its dict, (D, L) / (D, L, F),
    or D alone. RTE's configuration with BERT-base at N = 256 gives 3.37.
    """
    D, L, F = _dims(config_or_dims)
    L = len(retention) if L is None else L
    return encoder_macs((D, L, F), None, N) / encoder_macs((D, L, F), retention, N)


def retention_for_bound(config_or_dims, N: int, target: float) -> list[int]:
    """A geometric retention configuration ℓ_j = ceil(N·r^j) (j = 1..L) whose FLOP bound is the
    largest not above ``target`` (bisection on r). For benchmarks and sweeps that need a
    configuration of a given bound, e.g. ``retention_for_bound(BertConfig(), 512, 4.5)``."""
    D, L, F = _dims(config_or_dims)
    if L is None:
        raise ValueError("retention_for_bound: give the number of layers (a config or (D, L))")
    if not target >= 1.0:
        raise ValueError(f"retention_for_bound: target must be >= 1 (a speed-up), got {target}")
    N = int(N)
    lo, hi, best = 0.0, 1.0, [N] * L
    for _ in range(50):
        r = (lo + hi) / 2
        ell = [max(1, min(N, math.ceil(N * r ** (j + 1)))) for j in range(L)]
        if flop_bound((D, L, F), ell, N) > target:
            lo = r
        else:
            hi, best = r, ell
    return best
