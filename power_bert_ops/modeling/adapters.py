"""Per-family adapters: how the PoWER encoder reaches the pieces of a Hugging Face layer.

The PoWER encoder (``encoder.PowerBertEncoder``) runs every layer as

    q, k, v = adapter.qkv(layer)(x)                # projections
    a       = attention(q, k, v)                    # [+ significance in eliminating layers]
    a, res  = gather rows of a and x                # SPEC 1.2 W_o / residual shortcut
    x'      = adapter.attention_output(layer, a, res)   # LN(res + Dropout(W_o a))
    y       = adapter.feed_forward(layer, x')           # LN(x' + FFN(x'))

reusing the layer's own submodules, so weights are never copied.

* ``bert`` family (BertLayer structure): BERT (incl. MiniLM), RoBERTa, XLM-RoBERTa, ELECTRA.
* ``albert``: one (or a few) shared AlbertLayer groups applied num_hidden_layers times, plus the
  embedding_hidden_mapping_in projection before the first layer.
"""
from __future__ import annotations

from torch import nn

from .configuration_power_bert import check_supported

__all__ = ["ADAPTERS", "AlbertAdapter", "BertAdapter", "set_attention_dropout"]


class BertAdapter:
    """attention.self.{query,key,value}, attention.output.{dense,dropout,LayerNorm},
    intermediate.{dense,act}, output.{dense,dropout,LayerNorm}."""

    @staticmethod
    def layers(encoder: nn.Module, config) -> list[nn.Module]:
        return list(encoder.layer)

    @staticmethod
    def check_layer(layer: nn.Module) -> None:
        for path in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output",
                     "intermediate", "output"):
            obj = layer
            for part in path.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    raise ValueError(f"PoWER-BERT: {type(layer).__name__} has no `{path}`; it does not have the "
                                     "BertLayer structure this adapter expects")

    @staticmethod
    def pre(encoder: nn.Module, x):
        return x

    @staticmethod
    def qkv(layer):
        s = layer.attention.self
        return s.query, s.key, s.value

    @staticmethod
    def attention_dropout(layer) -> float:
        return float(layer.attention.self.dropout.p)

    @staticmethod
    def set_attention_dropout(layer, p: float) -> None:
        layer.attention.self.dropout.p = p

    @staticmethod
    def attention_output(layer, context, residual):
        return layer.attention.output(context, residual)  # LayerNorm(Dropout(dense(context)) + residual)

    @staticmethod
    def feed_forward(layer, x):
        return layer.output(layer.intermediate(x), x)  # LayerNorm(Dropout(dense(act(dense(x)))) + x)


class AlbertAdapter:
    """AlbertTransformer: embedding_hidden_mapping_in, albert_layer_groups[g].albert_layers[i] with
    attention.{query,key,value,dense,output_dropout,LayerNorm}, ffn, activation, ffn_output,
    full_layer_layer_norm."""

    @staticmethod
    def layers(encoder: nn.Module, config) -> list[nn.Module]:
        out = []
        L, groups = config.num_hidden_layers, config.num_hidden_groups
        for i in range(L):
            group_idx = int(i / (L / groups))  # as AlbertTransformer.forward
            out.extend(encoder.albert_layer_groups[group_idx].albert_layers)
        return out

    @staticmethod
    def check_layer(layer: nn.Module) -> None:
        for name in ("attention", "ffn", "ffn_output", "full_layer_layer_norm", "activation"):
            if not hasattr(layer, name):
                raise ValueError(f"PoWER-BERT: {type(layer).__name__} has no `{name}`; it does not have the "
                                 "AlbertLayer structure this adapter expects")

    @staticmethod
    def pre(encoder: nn.Module, x):
        return encoder.embedding_hidden_mapping_in(x)

    @staticmethod
    def qkv(layer):
        a = layer.attention
        return a.query, a.key, a.value

    @staticmethod
    def attention_dropout(layer) -> float:
        return float(layer.attention.attention_dropout.p)

    @staticmethod
    def set_attention_dropout(layer, p: float) -> None:
        layer.attention.attention_dropout.p = p

    @staticmethod
    def attention_output(layer, context, residual):
        a = layer.attention
        return a.LayerNorm(residual + a.output_dropout(a.dense(context)))

    @staticmethod
    def feed_forward(layer, x):
        f = layer.ffn_output(layer.activation(layer.ffn(x)))
        return layer.full_layer_layer_norm(f + x)


ADAPTERS = {"bert": BertAdapter, "albert": AlbertAdapter}


def set_attention_dropout(hf_model: nn.Module, p: float) -> None:
    """Sets the dropout on attention probabilities of ``hf_model`` (a Hugging Face model of a
    supported family, plain or wrapped by a PoWER model) to ``p``: in every layer and in its
    config (``attention_probs_dropout_prob``)."""
    adapter = ADAPTERS[check_supported(hf_model.config)]
    encoder = getattr(hf_model, hf_model.base_model_prefix).encoder
    for layer in adapter.layers(encoder, hf_model.config):
        adapter.set_attention_dropout(layer, p)
    hf_model.config.attention_probs_dropout_prob = p
