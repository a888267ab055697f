"""Distillation from the stage-1 teacher: logit distillation (KL at temperature T scaled by T²,
MSE for regression) with the mixing rule ``loss = (1 - alpha)·task + alpha·KD``, and
hidden-state distillation on the kept rows (each layer's output rows against the teacher's
output of the same layer at the same input positions), and ranking distillation (ToP, KDD 2023,
in its listwise form): each eliminating layer's significance of its input rows, as a
distribution, against the teacher's last-layer significance of the same rows."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from .speed import real_width

__all__ = ["DEFAULT_ALPHA", "DEFAULT_TEMPERATURE", "MAX_TEMPERATURE", "MIN_TEMPERATURE", "TeacherCache",
           "distillation_loss", "hidden_distillation_loss", "mix_distillation", "ranking_distillation_loss",
           "teacher_significance"]

DEFAULT_TEMPERATURE = 2.0
"""Distillation temperature used when the caller gives none."""

DEFAULT_ALPHA = 0.5
"""Weight of the distillation term in :func:`mix_distillation` when the caller gives none."""

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
"""The temperatures the pipeline takes: far outside, the scaled logits or T² overflow float32 and
the loss is NaN (Hinton et al. use 1-20)."""


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
                      problem: str = "classification") -> torch.Tensor:
    """Logit distillation from the stage-1 teacher.

    * classification / multiple_choice: T² · KL(softmax(t / T) ‖ softmax(s / T)), averaged over
      the batch (the last axis holds the classes or choices). The T² keeps the gradient's size
      comparable to the task loss's as T changes (Hinton et al., 2015).
    * regression: mean squared error between the student's and the teacher's outputs
      (the temperature does not apply).

    Args:
        student_logits: [B, C] (or [B] / [B, 1] for regression), differentiable.
        teacher_logits: the same shape; no gradient flows into it (it is detached).
        temperature: T > 0.
        problem: "classification", "multiple_choice" or "regression".

    Returns:
        A scalar tensor in the student's dtype promoted to at least float32.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"distillation_loss: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    teacher = teacher_logits.detach().float()
    student = student_logits.float()
    if problem == "regression":
        return F.mse_loss(student, teacher)
    if problem not in ("classification", "multiple_choice"):
        raise ValueError(f"distillation_loss: problem must be classification, multiple_choice or regression, got "
                         f"{problem!r}")
    T = float(temperature)
    if not T > 0:
        raise ValueError(f"distillation_loss: temperature must be > 0, got {temperature}")
    s = F.log_softmax(student / T, dim=-1).reshape(-1, student.shape[-1])
    t = F.log_softmax(teacher / T, dim=-1).reshape(-1, student.shape[-1])
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * (T * T)


def mix_distillation(task_loss: torch.Tensor, kd_loss: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """The mixing rule: ``(1 - alpha) · task_loss + alpha · kd_loss``; alpha = 0 is no
    distillation, alpha = 1 learns from the teacher alone. Stage 2 adds λ·Σ_j j·mass_j on top.

    Args:
        task_loss: the task loss (cross-entropy or MSE) on the labels.
        kd_loss: :func:`distillation_loss` of the same batch.
        alpha: in [0, 1].

    Returns:
        The mixed scalar loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mix_distillation: alpha must be in [0, 1], got {alpha}")
    return (1.0 - alpha) * task_loss + alpha * kd_loss


def hidden_distillation_loss(student_hidden, record, teacher_hidden) -> torch.Tensor:
    """Hidden-state distillation on the kept rows: for every layer j, the squared error between
    the student's output rows and the teacher's layer-j output at the same input positions,
    relative to the teacher's squared norm on those rows (a scale-free error: 1 for a student
    that outputs zeros), over the rows the student's mask marks real; averaged over the layers.

    Args:
        student_hidden: the student's (encoder input, layer 1, ..., layer L) outputs; layer j's
            is [B, ℓ_j, D] (the rows it kept).
        record: the student's :class:`~power_bert_ops.modeling.EncoderRecord` of the same pass
            (``kept`` and ``masks`` per layer).
        teacher_hidden: the teacher's ``hidden_states`` (L + 1 tensors [B, N, D]), no gradient.

    Returns:
        A float32 scalar tensor.
    """
    L = len(student_hidden) - 1
    if len(teacher_hidden) != L + 1 or len(record.kept) != L:
        raise ValueError(f"hidden_distillation_loss: the student has {L} layers and the teacher "
                         f"{len(teacher_hidden) - 1}; distillation needs the same depth")
    total = student_hidden[1].new_zeros((), dtype=torch.float32)
    for j, pos in enumerate(record.original_positions()):
        student, teacher = student_hidden[j + 1].float(), teacher_hidden[j + 1].detach().float()
        if pos is not None:
            teacher = teacher.gather(1, pos[:, :, None].expand(-1, -1, teacher.shape[-1]))
        mask = record.masks[j]
        real = torch.ones(student.shape[:2], device=student.device) if mask is None else (mask != 0).float()
        err = ((student - teacher).pow(2).sum(dim=-1) * real).sum()
        total = total + err / (teacher.pow(2).sum(dim=-1) * real).sum().clamp_min(1e-12)
    return total / L


def teacher_significance(teacher_out, attention_mask: torch.Tensor | None, exclude_self: bool = True) -> torch.Tensor:
    """SPEC 1.1 significance of the teacher's last layer: the teacher's ranking of the input rows.

    Args:
        teacher_out: the teacher's output of a pass with ``output_attentions=True`` (eager
            attention): ``attentions[-1]`` [B, H, N, N].
        attention_mask: [B, N] (1 / True: real), [B, C, N] for multiple choice (the teacher's B·C
            rows), or None (every row real).
        exclude_self: as the student's significance.

    Returns:
        float32 [B, N], ``-inf`` at padding, no gradient.
    """
    from .. import ops

    attentions = getattr(teacher_out, "attentions", None)
    if not attentions or attentions[-1] is None:
        raise ValueError("teacher_significance: the teacher's output has no attentions; run it with "
                         "output_attentions=True and eager attention (model.set_attn_implementation('eager'))")
    attn = attentions[-1].detach()
    mask = torch.ones(attn.shape[0], attn.shape[-1], dtype=torch.bool, device=attn.device) if attention_mask is None \
        else attention_mask.reshape(-1, attention_mask.shape[-1])
    return ops.significance(attn, mask, exclude_self)


def ranking_distillation_loss(record, teacher_sig: torch.Tensor) -> torch.Tensor:
    """Ranking distillation: for every layer j that removes rows, KL(p_t ‖ p_s), where p_s is the
    student's layer-j significance of its input rows (``record.significance_grad[j]``) and p_t the
    teacher's last-layer significance of the same input positions, each normalised to sum 1 over
    the example's real rows other than [CLS] (which hard mode always keeps); the mean over the
    examples with at least two such rows, then over those layers. It pulls the attention of the
    layers that choose rows towards the rows the teacher finds significant at its last layer
    (ToP's ranking distillation, as a listwise KL instead of LambdaLoss).

    Args:
        record: the student's :class:`~power_bert_ops.modeling.EncoderRecord` of a pass run with
            ``significance_grad=[]`` (``kept`` and ``significance_grad`` per layer).
        teacher_sig: float [B, N]: :func:`teacher_significance` of the same batch.

    Returns:
        A float32 scalar tensor (0 when no layer removed rows).
    """
    grads = record.significance_grad
    if grads is None or len(grads) != len(record.kept):
        raise ValueError("ranking_distillation_loss: the record holds no significance_grad for its layers; run the "
                         "student with power_bert_record=EncoderRecord(significance_grad=[])")
    tiny = 1e-12
    teacher = teacher_sig.detach().float()
    inputs = [None] + record.original_positions()[:-1]  # the positions of layer j's input rows
    losses = []
    for s, pos in zip(grads, inputs):
        if s is None:
            continue
        B, n = s.shape
        if pos is None:
            if (B, n) != tuple(teacher.shape):
                raise ValueError(f"ranking_distillation_loss: student significance {tuple(s.shape)} and teacher "
                                 f"significance {tuple(teacher.shape)} differ in shape")
            pos = torch.arange(n, device=s.device).expand(B, n)
        t = teacher.gather(1, pos)
        real = torch.isfinite(s.detach()) & torch.isfinite(t) & (pos != 0)
        t = t.masked_fill(~real, 0.0).clamp_min(0.0)
        st = s.float().masked_fill(~real, 0.0).clamp_min(0.0)
        p_t = t / t.sum(dim=1, keepdim=True).clamp_min(tiny)
        log_p_s = st.clamp_min(tiny).log() - st.sum(dim=1, keepdim=True).clamp_min(tiny).log()
        terms = p_t * (p_t.clamp_min(tiny).log() - log_p_s)
        kl = terms.masked_fill(~real | (p_t == 0), 0.0).sum(dim=1)
        rows = real.sum(dim=1) > 1
        if bool(rows.any()):
            losses.append(kl[rows].mean())
    if not losses:
        return teacher.new_zeros(())
    return torch.stack(losses).mean()


class TeacherCache:
    """The frozen teacher's logits and last-layer significance of each training example, computed
    once and reused in every later epoch of stage 3.

    The teacher runs in eval mode (no dropout), and with padded keys masked and padded query rows
    left out of the significance (SPEC 1.1), what it gives an example depends on the example's
    real tokens only, not on its batch-mates or its padding. So each distinct example is keyed by
    its real tokens (every ``[B, n]`` integer input at the positions ``attention_mask`` marks),
    and the teacher runs only on the rows of a batch it has not seen, cut to their longest real
    row. Values agree with a pass over the whole batch up to float rounding (the reductions run
    over a different padded width).

    Batches it cannot key (multiple choice ``[B, C, N]``, ``inputs_embeds``) are left to the
    caller: :meth:`accepts` says which.

    Args:
        teacher: the stage-1 model (eval mode; eager attention when ``significance``).
        significance: also keep the teacher's last-layer significance (ranking distillation).
        exclude_self: as the student's significance.
    """

    def __init__(self, teacher, significance: bool, exclude_self: bool = True):
        self.teacher = teacher
        self.significance = significance
        self.exclude_self = exclude_self
        self._logits: dict[bytes, np.ndarray] = {}
        self._sig: dict[bytes, np.ndarray] = {}
        self._used: set[bytes] = set()  # the keys asked for since the last new_epoch()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._logits)

    @staticmethod
    def accepts(inputs: dict) -> bool:
        """Whether every tensor of ``inputs`` is an integer ``[B, n]`` tensor of one shape and
        ``input_ids`` is among them."""
        tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
        ids = inputs.get("input_ids")
        return (isinstance(ids, torch.Tensor) and ids.dim() == 2
                and all(t.shape == ids.shape and not t.is_floating_point() for t in tensors))

    def __call__(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's outputs for a batch.

        Args:
            inputs: the batch's model inputs, integer tensors [B, n] (``input_ids``, optionally
                ``attention_mask`` with 1 at real tokens, ``token_type_ids``, ...).

        Returns:
            (logits float32 [B, C] (the teacher's output shape per row), significance float32
            [B, n] with ``-inf`` at padding, or None without ``significance``), on the inputs'
            device.
        """
        if not self.accepts(inputs):
            raise ValueError("TeacherCache: the inputs must be integer tensors [B, n] of one shape, input_ids "
                             "among them; run the teacher itself on other batches")
        if getattr(self.teacher, "training", False):
            raise ValueError("TeacherCache: the teacher is in training mode, so its outputs change from pass to "
                             "pass (dropout); call teacher.eval() first")
        ids = inputs["input_ids"]
        device, (B, n) = ids.device, ids.shape
        host = {name: t.detach().cpu() for name, t in sorted(inputs.items()) if isinstance(t, torch.Tensor)}
        mask = host.get("attention_mask")
        real = torch.ones(B, n, dtype=torch.bool) if mask is None else mask != 0
        keys = []
        for b in range(B):
            h = hashlib.blake2b(digest_size=16)
            for name, t in host.items():
                h.update(name.encode())
                h.update(t[b][real[b]].numpy().tobytes())
            keys.append(h.digest())
        self._used.update(keys)
        missing = [b for b in range(B) if keys[b] not in self._logits]
        self.hits += B - len(missing)
        self.misses += len(missing)
        if missing:
            self._run(inputs, real, keys, missing)
        logits = torch.from_numpy(np.stack([self._logits[k] for k in keys])).to(device)
        if not self.significance:
            return logits, None
        sig = torch.full((B, n), float("-inf"), dtype=torch.float32)
        sig[real] = torch.from_numpy(np.concatenate([self._sig[k] for k in keys]))
        return logits, sig.to(device)

    def new_epoch(self) -> None:
        """Forgets the examples not asked for since the last call. Every training example is met
        once per epoch and stays; stage 3's word-dropped copies (:mod:`.augment`) are drawn afresh
        each epoch and are not met again, so the cache holds at most two epochs' rows."""
        for key in [k for k in self._logits if k not in self._used]:
            del self._logits[key]
            self._sig.pop(key, None)
        self._used = set()

    def _run(self, inputs: dict, real: torch.Tensor, keys: list, rows: list) -> None:
        width = real_width(real[rows])
        pick = torch.tensor(rows, device=inputs["input_ids"].device)
        sub = {name: t.index_select(0, pick)[:, :width] if isinstance(t, torch.Tensor) else t
               for name, t in inputs.items()}
        with torch.no_grad():
            out = self.teacher(**sub, output_attentions=self.significance)
            sig = teacher_significance(out, sub.get("attention_mask"), self.exclude_self).cpu() \
                if self.significance else None
        logits = out.logits.detach().float().cpu().numpy()
        sub_real = real[rows][:, :width]
        for i, b in enumerate(rows):
            self._logits[keys[b]] = logits[i]
            if sig is not None:
                self._sig[keys[b]] = sig[i][sub_real[i]].numpy()
