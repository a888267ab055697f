"""The plain-PyTorch compositions the kernels are measured against (the fastest eager
formulations, not the slow-but-obvious reference): what a user would write without us."""
import torch


def significance(attn, mask, exclude_self=True):
    """attn [B, H, N, N], mask [B, N] -> float32 [B, N]: masked sum over heads and queries."""
    real = mask != 0
    sig = (attn * real[:, None, :, None].to(attn.dtype)).sum(dim=(1, 2), dtype=torch.float32)
    if exclude_self:
        sig = sig - attn.diagonal(dim1=-2, dim2=-1).sum(dim=1, dtype=torch.float32)
    return sig.masked_fill(~real, float("-inf"))


def extract_scored(hidden, scores, mask, k):
    """topk + sort + gather, [CLS] forced by an infinite score."""
    s = scores.float().masked_fill(mask == 0, float("-inf"))
    s[:, 0] = float("inf")
    index = s.topk(k, dim=-1).indices.sort(dim=-1).values
    out = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
    return out, index, mask.gather(1, index)


def extract(hidden, attn, mask, k, exclude_self=True):
    """sum + topk + sort + gather."""
    return extract_scored(hidden, significance(attn, mask, exclude_self), mask, k)


def soft_extract(hidden, scores, mask, retention):
    """argsort + inverse permutation + gather of retention + multiply."""
    s = scores.float().masked_fill(mask == 0, float("-inf"))
    order = s.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(s.shape[1], device=s.device).expand_as(order))
    return hidden * retention[rank][:, :, None].to(hidden.dtype)
