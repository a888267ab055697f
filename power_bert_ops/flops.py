"""SPEC 3: the FLOP model of a PoWER-BERT encoder and the speed-up bound it implies.

Per encoder j with n_in = ℓ_{j-1} rows in and n_out = ℓ_j rows kept (multiply-adds):

    macs_j = 3·n_in·D² (QKV) + 2·n_in²·D (QKᵀ, PV) + n_out·D² (W_o) + 2·n_out·D·F (FFN)

with F the FFN width (4·D in BERT, which gives SPEC's 8·n_out·D²). The bound on the speed-up is
Σ_j macs_j(N, N) / Σ_j macs_j(ℓ_{j-1}, ℓ_j).
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["FlopModel", "RETENTION_SCALES", "bound_of", "check_target", "encoder_macs", "flop_bound", "flop_dims",
           "layer_macs", "max_reachable_speedup", "reference_length", "retention_for_bound", "row_floors", "rows_kept",
           "soft_bound"]

RETENTION_SCALES = ("relative", "absolute")
"""How ℓ_j is read (SPEC 1.6): ``absolute`` keeps min(ℓ_j, rows in) rows of every example (the
paper); ``relative`` keeps k_j(x) = min(len(x), max(m, ceil(ℓ_j·len(x)/N))) rows of an example
of len(x) real tokens, i.e. the fraction ρ_j = ℓ_j/N of its length, and at least m = ``min_rows``
(1 in SPEC 1.6) when len(x) is at most ``min_rows_max_length`` (every example when None), 1 beyond
(:func:`row_floors`)."""


def check_scale(scale: str) -> str:
    if scale not in RETENTION_SCALES:
        raise ValueError(f"retention scale must be one of {RETENTION_SCALES}, got {scale!r}")
    return scale


def rows_floor(scale: str, min_rows: int | None) -> int:
    """The floor of rows per example and layer (SPEC 1.6): ``min_rows`` (at least 1) under
    relative retention; 1 under absolute retention, which keeps ℓ_j rows whatever the floor. The
    one place this rule lives: the model, the FLOP model, the threshold calibration and the
    reports all read it from here."""
    return max(1, int(min_rows or 1)) if scale == "relative" else 1


def row_floors(lengths, scale: str, min_rows: int | None, max_length: int | None = None):
    """The floor of rows of each example (SPEC 1.6): :func:`rows_floor` for an example of at most
    ``max_length`` real tokens (every example when None), 1 for a longer one, whose fraction
    ρ_j·len already keeps its words. ``lengths``: an int, a numpy array or a torch tensor of real
    token counts -> the floors, of the same kind (int64 for a tensor)."""
    m = rows_floor(scale, min_rows)
    limit = math.inf if max_length is None else int(max_length)
    if isinstance(lengths, int):
        return m if lengths <= limit else 1
    if hasattr(lengths, "new_full"):  # torch
        import torch

        return torch.where(lengths <= limit, m, 1).to(lengths.dtype)
    import numpy as np

    arr = np.asarray(lengths)
    return np.where(arr <= limit, m, 1).astype(arr.dtype)


def reference_length(scale: str, sequence_length: int | None, padded_length: int) -> int:
    """The N a configuration's ℓ is read against: under relative retention the N the model was
    trained at (``sequence_length``), whatever length its inputs are padded to (a model trained at
    64 keeps 11/64 of a text at ℓ_j = 11 when timed at 128 too); under absolute retention, or when
    the trained N is unknown, the padded length."""
    check_scale(scale)
    return int(sequence_length or padded_length) if scale == "relative" else int(padded_length)


def rows_kept(retention: Sequence[int], N: int, length: int, scale: str = "absolute", min_rows: int = 1,
              min_rows_max_length: int | None = None) -> list[int]:
    """Rows layer j keeps of one example with ``length`` real tokens (SPEC 1.2 / 1.6; relative
    retention keeps at least ``min_rows`` of an example of at most ``min_rows_max_length`` tokens,
    :func:`row_floors`)."""
    check_scale(scale)
    out, prev = [], int(length)
    floor = row_floors(int(length), scale, min_rows, min_rows_max_length)
    for lj in retention:
        k = -(-int(lj) * int(length) // int(N)) if scale == "relative" else int(lj)
        prev = min(prev, max(floor, k))
        out.append(prev)
    return out


def layer_macs(n_in, n_out, hidden: int, ffn: int | None = None):
    """Multiply-adds of one encoder layer with n_in rows in and n_out rows kept. The row counts may
    be ints, real numbers (the search's smooth bound) or numpy arrays (one entry per length)."""
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


def retention_for_bound(config_or_dims, N: int, target: float, lengths=None, scale: str = "absolute") -> list[int]:
    """A geometric retention configuration ℓ_j = ceil(N·r^j) (j = 1..L) whose FLOP bound is the
    largest not above ``target`` (bisection on r). For benchmarks and sweeps that need a
    configuration of a given bound, e.g. ``retention_for_bound(BertConfig(), 512, 4.5)``. With
    ``lengths`` (and ``scale``) the bound is :class:`FlopModel`'s against the dense model at
    those real lengths."""
    D, L, F = _dims(config_or_dims)
    if L is None:
        raise ValueError("retention_for_bound: give the number of layers (a config or (D, L))")
    if not target >= 1.0:
        raise ValueError(f"retention_for_bound: target must be >= 1 (a speed-up), got {target}")
    N = int(N)
    bound = FlopModel((D, L, F), N, lengths=lengths, scale=scale).bound
    lo, hi, best = 0.0, 1.0, [N] * L
    for _ in range(50):
        r = (lo + hi) / 2
        ell = [max(1, min(N, math.ceil(N * r ** (j + 1)))) for j in range(L)]
        if bound(ell) > target:
            lo = r
        else:
            hi, best = r, ell
    return best


def _get_min_rows(config) -> tuple[int, int | None]:
    """(min_rows, min_rows_max_length) of a config (1 and None when it has none)."""
    get = config.get if isinstance(config, dict) else (lambda k, d: getattr(config, k, d))
    value, limit = get("min_rows", 1), get("min_rows_max_length", None)
    return (1 if value is None else int(value)), (None if limit is None else int(limit))


class FlopModel(tuple):
    """(D, L, F) of a model with the run's N and, optionally, the length distribution of its
    data: the FLOP bound of a retention configuration over real lengths (SPEC 1.6, 6).

    Without ``lengths`` every example is N tokens long and :meth:`bound` is :func:`flop_bound`.
    With them, :meth:`bound` is against the dense model at each example's real length (what a
    length-bucketing deployer runs).

    Args:
        config_or_dims: as :func:`flop_bound` (a config, (D, L[, F]) or D with ``layers``).
        N: the sequence length (ℓ_j ≤ N; relative ℓ_j reads as ρ_j = ℓ_j / N).
        lengths: real token counts of the examples (clipped to [1, N]), or None.
        scale: ``"absolute"`` or ``"relative"`` (:data:`RETENTION_SCALES`).
        min_rows: relative retention's floor of rows per example and layer; None: the config's
            ``min_rows`` and ``min_rows_max_length`` (1 when it has none or ``config_or_dims`` is
            not a config).
        min_rows_max_length: with ``min_rows`` given, the longest example the floor holds for
            (None: every example; :func:`row_floors`).
    """

    def __new__(cls, config_or_dims, N: int, lengths=None, scale: str = "absolute", layers: int | None = None,
                min_rows: int | None = None, min_rows_max_length: int | None = None):
        D, L, F = _dims(config_or_dims)
        L = layers if L is None else L
        if L is None:
            raise ValueError("FlopModel: give the number of layers (a config or (D, L))")
        self = super().__new__(cls, (D, int(L), F))
        self.N = int(N)
        self.scale = check_scale(scale)
        if min_rows is None and not isinstance(config_or_dims, (int, tuple, list)):
            min_rows, min_rows_max_length = _get_min_rows(config_or_dims)
        self.min_rows = rows_floor(self.scale, min_rows)
        self.min_rows_max_length = None if min_rows_max_length is None else int(min_rows_max_length)
        import numpy as np

        if lengths is None:
            self.lengths, self.counts = np.array([self.N], dtype=np.float64), np.array([1.0])
        else:
            arr = np.clip(np.asarray(list(lengths), dtype=np.int64), 1, self.N)
            if arr.size == 0:
                raise ValueError("FlopModel: `lengths` is empty")
            values, counts = np.unique(arr, return_counts=True)
            self.lengths, self.counts = values.astype(np.float64), counts.astype(np.float64)
        self.has_lengths = lengths is not None
        return self

    def __reduce__(self):
        lengths = None if not self.has_lengths else [int(v) for v, c in zip(self.lengths, self.counts)
                                                     for _ in range(int(c))]
        return (FlopModel, (tuple(self), self.N, lengths, self.scale, None, self.min_rows, self.min_rows_max_length))

    def _macs(self, rows_per_layer) -> float:
        """Σ over examples (weighted by count) of Σ_j macs_j, rows given per layer as arrays."""
        D, _, F = self
        n_in = self.lengths
        total = 0.0
        for n_out in rows_per_layer:  # layer_macs on arrays of row counts, one entry per length
            total = total + layer_macs(n_in, n_out, D, F)
            n_in = n_out
        return float((total * self.counts).sum())

    def _rows(self, values, integer: bool):
        import numpy as np

        prev, out = self.lengths, []
        floor = row_floors(self.lengths, self.scale, self.min_rows, self.min_rows_max_length)
        for v in values:
            if self.scale == "relative" and integer:  # ceil(ℓ_j·len/N) in integers
                k = -(-(int(v) * self.lengths.astype(np.int64)) // self.N).astype(np.float64)
            elif self.scale == "relative":
                k = float(v) * self.lengths / self.N
            else:
                k = np.full_like(self.lengths, float(v))
            prev = np.minimum(prev, np.maximum(floor, k))
            out.append(prev)
        return out

    def dense_macs(self) -> float:
        """Multiply-adds of the dense model over the data at its real lengths."""
        return self._macs([self.lengths] * self[1])

    def macs(self, retention: Sequence[int]) -> float:
        if len(retention) != self[1]:
            raise ValueError(f"flop_bound: the retention configuration has {len(retention)} entries but the model "
                             f"has {self[1]} layers")
        return self._macs(self._rows([int(v) for v in retention], integer=True))

    def bound(self, retention: Sequence[int]) -> float:
        """Speed-up bound against the dense model at the examples' real lengths."""
        return self.dense_macs() / self.macs(retention)

    def soft_bound(self, masses: Sequence[float]) -> float:
        """:meth:`bound` of real-valued masses (rows not rounded, each ≥ 1): for the controller."""
        rows, prev = [], float(self.N)
        for m in masses:
            prev = min(prev, max(1.0, float(m)))
            rows.append(prev)
        return self.dense_macs() / self._macs(self._rows(rows, integer=False))


# ------------------------------------------------------------------------------------------------
# Bounds for the configuration search: a model's (D, L, F), or a FlopModel over real lengths
# ------------------------------------------------------------------------------------------------
def flop_dims(config, n_layers: int | None = None):
    """(D, L, F) from anything :func:`flop_bound` accepts, L required (``n_layers`` when the
    config has none). A :class:`FlopModel` (bounds over a length distribution) passes as it is."""
    if isinstance(config, FlopModel):
        return config
    D, L, F = _dims(config)
    L = n_layers if L is None else L
    if L is None:
        raise ValueError("give the number of layers: a model config or a (hidden, layers) tuple")
    return D, int(L), F


def bound_of(dims, ell: Sequence[int], n: int) -> float:
    """SPEC 3 FLOP bound of the integer configuration ``ell`` at N = ``n`` (over the lengths of a
    FlopModel when ``dims`` is one)."""
    if isinstance(dims, FlopModel):
        return dims.bound(ell)
    return encoder_macs(dims, None, n) / encoder_macs(dims, ell, n)


def soft_bound(masses: Sequence[float], config, n: int) -> float:
    """The FLOP bound of real-valued retention masses: row counts clamp(cummin(mass_j), 1, n),
    no rounding. A smooth version of flop_bound(derive_retention(masses)) for the controller.

    Args:
        masses: mass_j = Σ_t r_j[t] per layer (L floats).
        config: a model config (PowerBertConfig, Hugging Face config or dict), (D, L[, F]) or a
            :class:`FlopModel`.
        n: the sequence length N.

    Returns:
        The bound Σ_j macs_j(N, N) / Σ_j macs_j(rows_{j-1}, rows_j) as a float ≥ 1.
    """
    dims = flop_dims(config, len(masses))
    model = dims if isinstance(dims, FlopModel) else FlopModel(dims, n)
    return model.soft_bound(masses)


def max_reachable_speedup(config, n: int) -> float:
    """The largest FLOP bound any configuration reaches at N = ``n``: ℓ = [1]*L.

    Args:
        config: a model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N (≥ 1).

    Returns:
        flop_bound(config, [1]*L, n).
    """
    dims = flop_dims(config)
    return bound_of(dims, [1] * dims[1], int(n))


def check_target(target: float, config, n: int) -> float:
    """Refuses a target speed-up no configuration can give. Cheap (two FLOP sums): call it
    before training.

    Args:
        target: the requested FLOP-bound speed-up X.
        config: a model config (PowerBertConfig, Hugging Face config or dict) or (D, L[, F]).
        n: the sequence length N of the run.

    Returns:
        The largest reachable bound (ℓ = [1]*L), for the caller's report.

    Raises:
        ValueError: X is not a finite number, X < 1, or X is above the largest reachable bound
            (the message names that bound, the model's D and L, and N).
    """
    dims = flop_dims(config)
    if int(n) < 1:
        raise ValueError(f"target speed-up: the sequence length must be >= 1, got {n}")
    top = bound_of(dims, [1] * dims[1], int(n))
    where = f"for this model (D={dims[0]}, L={dims[1]}) at N={n}"
    try:
        x = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"target speed-up must be a number, got {target!r}; the largest reachable FLOP bound "
                         f"{where} is {top:.3f}") from None
    if not math.isfinite(x) or x < 1.0:
        raise ValueError(f"target speed-up must be a number >= 1 (1 = no elimination), got {target!r}; the largest "
                         f"reachable FLOP bound {where} is {top:.3f}")
    if x > top:
        fewest, levers = "one row in every layer", "use a longer sequence length"
        if getattr(dims, "min_rows", 1) > 1:
            which = "each example" if dims.min_rows_max_length is None else \
                f"each example of at most {dims.min_rows_max_length} tokens (--min-rows-max-length)"
            fewest = f"in every layer the {dims.min_rows} rows {which} keeps at least (--min-rows)"
            levers = "a lower --min-rows or a longer sequence length"
        raise ValueError(f"target speed-up {x:g} is above the largest reachable FLOP bound {top:.3f} {where} "
                         f"(keeping {fewest}); ask for at most {top:.3f}, or {levers}")
    return top
