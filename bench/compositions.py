"""The plain-PyTorch compositions the kernels are measured against (the fastest eager
formulations, not the slow-but-obvious reference): what a user would write without us."""
import torch

from power_bert_ops import reference


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


def attention(q, k, v, mask, dropout_p=0.0, need_significance=True, exclude_self=True):
    """softmax(QKᵀ/√d + padding bias) V and, when asked, ``significance`` of the probabilities
    (reference.attention's signature; no dropout)."""
    B, n = mask.shape
    bias = torch.zeros(B, 1, 1, n, dtype=q.dtype, device=q.device).masked_fill(mask[:, None, None, :] == 0,
                                                                              float("-inf"))
    probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias, dim=-1)
    return probs @ v, significance(probs, mask, exclude_self) if need_significance else None


@torch.inference_mode()
def eager_power_bert_logits(hf, retention, input_ids, attention_mask, token_type_ids=None):
    """SPEC 1.2 in plain eager PyTorch over a Hugging Face BERT-family classifier (what a user
    would write without our kernels): the model reference (``reference.model_logits``) with the
    compositions above: eager attention probabilities, significance by ``significance``,
    selection by ``extract_scored`` (topk + sort + gather) on the attention context, the W_o /
    residual gather shortcut, then W_o, LayerNorm and the FFN on the kept rows. Same weights,
    same logits as the PoWER model's hard mode."""
    return reference.model_logits(hf, retention, input_ids, attention_mask, token_type_ids,
                                  attend=attention, select=extract_scored, gather_before_wo=True)


def dense_bert(**sizes):
    """The dense model the model benchmarks measure against: BertForSequenceClassification with
    ``sizes`` (BertConfig fields) and 2 labels, SDPA attention, random weights drawn after
    torch.manual_seed(0), in eval mode."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    cfg = BertConfig(num_labels=2, **sizes)
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa").eval()
