"""PoWER-BERT models for Hugging Face BERT-family checkpoints (BERT, MiniLM, RoBERTa,
XLM-RoBERTa, ELECTRA, ALBERT).

    from power_bert_ops.modeling import PowerBertForSequenceClassification
    model = PowerBertForSequenceClassification.from_pretrained(path, num_labels=2,
                                                              retention=[153, 125, ...])  # hard mode
    model.save_pretrained(out)   # config.json (model_type power_bert) + model.safetensors

Importing this module registers ``power_bert`` with AutoConfig, AutoModelForSequenceClassification
and AutoModelForMultipleChoice. Needs ``transformers`` (not a dependency of the ops themselves).
"""
from transformers import AutoConfig, AutoModelForMultipleChoice, AutoModelForSequenceClassification

from ..flops import flop_bound
from .configuration_power_bert import (
    MODES,
    POWER_ATTENTION,
    SUPPORTED_MODEL_TYPES,
    PowerBertConfig,
    check_retention,
    derive_retention,
)
from .encoder import EncoderRecord, PowerBertEncoder
from .modeling_power_bert import (
    PowerBertForMultipleChoice,
    PowerBertForSequenceClassification,
    PowerBertPreTrainedModel,
)

AutoConfig.register("power_bert", PowerBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(PowerBertConfig, PowerBertForSequenceClassification, exist_ok=True)
AutoModelForMultipleChoice.register(PowerBertConfig, PowerBertForMultipleChoice, exist_ok=True)

__all__ = [
    "MODES",
    "POWER_ATTENTION",
    "SUPPORTED_MODEL_TYPES",
    "EncoderRecord",
    "PowerBertConfig",
    "PowerBertEncoder",
    "PowerBertForMultipleChoice",
    "PowerBertForSequenceClassification",
    "PowerBertPreTrainedModel",
    "check_retention",
    "derive_retention",
    "flop_bound",
]
