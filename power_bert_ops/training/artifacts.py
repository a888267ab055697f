"""Model folders as the pipeline writes and reads them: a Hugging Face checkpoint (safetensors
only) with its tokenizer beside it, ``model_max_length`` = the N it was trained at.

Every load here checks what it reads and names the file at fault: a missing folder, an
unreadable config, truncated weights, a tokenizer that is missing or whose vocabulary does not
fit the model's embeddings (a [UNK]-only tokenizer silently turns every word into [UNK]).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedConfig,
)

from .._quiet import quiet_transformers
from .._text import count_text
from ..modeling import PowerBertForMultipleChoice, PowerBertForSequenceClassification
from ..modeling.configuration_power_bert import base_config_from_dict, check_supported, max_positions
from .errors import CorruptModelError, PowerBertError, check_whole_number

__all__ = [
    "MIN_MAX_LENGTH", "check_checkpoint", "check_labels_fit", "check_max_length", "check_same_classifier", "check_weights",
    "default_max_length", "label_names", "load_classifier", "load_model", "load_tokenizer", "position_limit",
    "save_tokenizer",
]

# How far a tokenizer's size may fall below the embedding rows: checkpoints round vocab_size up
# (e.g. to a multiple of 8 or 128), but a tokenizer holding half the rows is not the model's.
_MIN_VOCAB_FRACTION = 0.5


def _fix_hint(model_dir) -> str:
    return (f"re-create {model_dir} (a `power-bert run` with the same arguments redoes a stage whose model is "
            f"damaged)")


def check_weights(model_dir) -> list[Path]:
    """The folder's .safetensors files, each checked whole: its header parses and the file is
    as long as the tensors the header lists. CorruptModelError names a file that is not."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CorruptModelError(f"{model_dir} has no .safetensors weights (pickled checkpoints are not loaded); "
                                f"{_fix_hint(model_dir)}")
    for f in files:
        try:
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(8)
                (n,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
                header = json.loads(fh.read(n)) if n is not None and n <= size else None
            if header is None:
                raise ValueError("the header is cut off")
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if size < 8 + n + end:
                raise ValueError(f"the file holds {size} bytes, its tensors need {8 + n + end}")
            with safe_open(str(f), "pt") as st:
                st.keys()
        except (OSError, ValueError, KeyError, TypeError, struct.error, SafetensorError) as e:
            raise CorruptModelError(f"{f} is truncated or not a safetensors file ({e}); {_fix_hint(model_dir)}") \
                from None
    return files


def _first_line(e: Exception) -> str:
    """The first line of ``e``'s message (transformers' run on with advice about upgrading it), or
    its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_config(model_dir, what: str = "model folder") -> PreTrainedConfig:
    """The folder's config.json as a transformers config; PowerBertError when the folder or
    its config is missing or unreadable."""
    path = Path(model_dir)
    if not path.is_dir():
        raise PowerBertError(f"{what} {model_dir} does not exist or is not a folder (no hub access here: give "
                             f"a local checkpoint folder)")
    if not (path / "config.json").is_file():
        models = [p for p in (path / "retrain" / "model", path / "finetune" / "model") if (p / "config.json").is_file()]
        hint = (f"; it is a `power-bert run` folder: give its models, {' or '.join(map(str, models))} "
                f"(PoWER-BERT, then the fine-tuned baseline)") if len(models) == 2 else ""
        raise PowerBertError(f"{what} {model_dir} holds no config.json: it is not a Hugging Face model folder{hint}")
    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, AttributeError, KeyError, json.JSONDecodeError) as e:
        raise PowerBertError(f"{model_dir} is not a readable Hugging Face checkpoint: its config.json is not valid "
                             f"({_first_line(e)})") from None
    if cfg.model_type == "power_bert" and not isinstance(getattr(cfg, "base_config", None), dict):
        raise PowerBertError(f"{model_dir} is not a readable Hugging Face checkpoint: its config.json is not valid "
                             f"(a PoWER-BERT config needs base_config, the wrapped model's config)")
    return cfg


def _base_config(cfg):
    return base_config_from_dict(cfg.base_config) if cfg.model_type == "power_bert" else cfg


def check_checkpoint(model_dir, what: str = "--model") -> PreTrainedConfig:
    """Fails before any work when ``model_dir`` is not a loadable checkpoint of a supported
    family: a missing folder or config.json, a foreign architecture, weights that are missing,
    pickled or truncated. Returns its config. ``what`` names the folder in messages."""
    cfg = read_config(model_dir, what)
    try:
        check_supported(_base_config(cfg))
    except ValueError as e:
        raise PowerBertError(str(e)) from None
    check_weights(model_dir)
    return cfg


def position_limit(cfg) -> int:
    """The longest input (tokens) the checkpoint's position embeddings hold."""
    return max_positions(_base_config(cfg))


MIN_MAX_LENGTH = 4
"""The shortest N a model is run or exported at: [CLS], [SEP] and words."""


def check_max_length(max_length, cfg) -> int:
    """``--max-length`` checked against a model: a whole number of at least
    :data:`MIN_MAX_LENGTH` tokens that its position embeddings hold.

    Args:
        max_length: the N asked for.
        cfg: the model's config (Hugging Face or PoWER-BERT) or its dict.

    Returns:
        ``max_length`` as an int.
    """
    n = check_whole_number(max_length, "--max-length", minimum=MIN_MAX_LENGTH)
    limit = position_limit(cfg)
    if n > limit:
        raise PowerBertError(f"--max-length {n} is longer than the model's position embeddings hold ({limit} "
                             f"tokens); use at most {limit}")
    return n


# The files a Hugging Face tokenizer is read from (fast, WordPiece, SentencePiece, BPE): a folder
# with none of them has no tokenizer of its own.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "spm.model", "sentencepiece.bpe.model",
                    "tokenizer.model", "vocab.json")


def load_tokenizer(model_dir, cfg=None):
    """The tokenizer saved in ``model_dir``, checked against the model's embedding rows. The
    model's (base) config is handed to AutoTokenizer, so it does not read config.json again (for
    a PoWER-BERT folder, through a class that warns about the model type); transformers'
    messages that mean nothing to our users are silenced for the call (:mod:`.._quiet`). It pads
    on the right, whatever its saved ``padding_side``."""
    cfg = cfg if cfg is not None else read_config(model_dir)
    if Path(model_dir).is_dir() and not any((Path(model_dir) / f).is_file() for f in _TOKENIZER_FILES):
        raise CorruptModelError(f"{model_dir}: the folder holds no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])} "
                                f"...); copy the tokenizer the model was trained with into the folder")
    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(str(model_dir), config=_base_config(cfg))
    except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
        reason = " ".join(str(e).split())  # one line: transformers' messages run over several
        raise CorruptModelError(f"{model_dir}: its tokenizer cannot be loaded ({reason}); the folder needs the "
                                f"tokenizer files it was trained with (tokenizer.json / vocab.txt ...)") from None
    # PoWER-BERT keeps position 0 as [CLS] (SPEC 1.2): rows are padded on the right whatever the
    # saved tokenizer says, and every folder the pipeline saves says so too.
    tok.padding_side = "right"
    rows = int(getattr(_base_config(cfg), "vocab_size", 0) or 0)
    if rows and not rows * _MIN_VOCAB_FRACTION <= len(tok) <= rows:
        raise CorruptModelError(
            f"{model_dir}: its tokenizer has {len(tok)} tokens but the model's embeddings have {rows} rows: the "
            f"tokenizer files (tokenizer.json / vocab.txt) are missing or belong to another model; copy the "
            f"tokenizer the model was trained with into the folder")
    return tok


def save_tokenizer(tokenizer, model_dir, max_length: int) -> None:
    """Saves ``tokenizer`` into ``model_dir`` with ``model_max_length`` = N, so
    ``pipeline(..., truncation=True)`` and every ``power-bert`` command run at the trained N."""
    tokenizer.model_max_length = int(max_length)
    tokenizer.save_pretrained(str(model_dir))


def default_max_length(model, tokenizer) -> int | None:
    """The N a saved model was trained at: a PoWER-BERT model's ``sequence_length``, else its
    tokenizer's ``model_max_length`` when it is a real length; None when neither says."""
    n = getattr(model.config, "sequence_length", None)
    if n:
        return int(n)
    n = getattr(tokenizer, "model_max_length", None)
    limit = position_limit(model.config)
    return int(n) if n and 1 <= int(n) <= limit else None


def load_classifier(model_dir, cfg=None, *, dtype=None, device: str | None = None):
    """The model of a saved folder (a PoWER-BERT model with its mode and ℓ, or a plain Hugging
    Face classifier), in eval mode, without its tokenizer. ``cfg``: the folder's config when
    already read and checked (else :func:`check_checkpoint` reads it); ``dtype`` as in
    ``from_pretrained``. CorruptModelError when the weights do not fit the config, when any
    weight the model needs is missing from them (Hugging Face would fill it with random values)
    or when a weight holds NaN or inf."""
    cfg = cfg if cfg is not None else check_checkpoint(model_dir, "model folder")
    mc = any(a.endswith("ForMultipleChoice") for a in (getattr(cfg, "architectures", None) or []))
    kwargs = {"output_loading_info": True, "ignore_mismatched_sizes": True}  # _check_loaded names what did not fit
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        if cfg.model_type == "power_bert":
            cls = PowerBertForMultipleChoice if mc else PowerBertForSequenceClassification
            model, info = cls.from_pretrained(str(model_dir), config=cfg, **kwargs)
        else:
            cls = AutoModelForMultipleChoice if mc else AutoModelForSequenceClassification
            model, info = cls.from_pretrained(str(model_dir), use_safetensors=True, **kwargs)
    except (RuntimeError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise CorruptModelError(f"{model_dir}: its config.json and weights do not make a model ({_first_line(e)}); "
                                f"{_fix_hint(model_dir)}") from None
    _check_loaded(model_dir, model, info)
    if device is not None:
        model.to(device)
    return model.eval()


def _head_only(model, names: list[str]) -> bool:
    """Whether ``names`` are what a checkpoint saved without a task head lacks: its config.json
    names no classifier architecture and every weight lies outside the encoder
    (``model.base_model_prefix``)."""
    heads = ("ForSequenceClassification", "ForMultipleChoice")
    if any(str(a).endswith(heads) for a in getattr(model.config, "architectures", None) or ()):
        return False  # a classifier's folder that lost its head's weights: damaged
    prefix = getattr(model, "base_model_prefix", "") or ""
    return bool(prefix) and not any(n == prefix or n.startswith(prefix + ".") for n in names)


def _check_loaded(model_dir, model, info: dict) -> None:
    """CorruptModelError when ``from_pretrained``'s ``info`` names weights the checkpoint lacked,
    held in another shape or held with no place in the model (buffers Hugging Face ignores, such
    as old checkpoints' position_ids, are not named), or when a weight of ``model`` is not finite."""
    for key, what in (("missing_keys", "lacks {} the model needs"),
                      ("mismatched_keys", "holds {} in another shape than its config.json gives"),
                      ("unexpected_keys", "holds {} its config.json has no place for")):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            if key == "missing_keys" and _head_only(model, names):
                raise CorruptModelError(f"{model_dir} is a pretrained encoder without the classifier's head (its "
                                        f"weights lack {shown}), not a fine-tuned model: fine-tune it first "
                                        f"(`power-bert run --model {model_dir} ...`) and give the model folder the "
                                        f"run writes (retrain/model; finetune/model for the dense baseline)")
            raise CorruptModelError(f"{model_dir}: its weights file {what.format(count_text(len(names), 'weight'))} "
                                    f"({shown}); {_fix_hint(model_dir)}")
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(p.detach().isfinite().all()):
            raise CorruptModelError(f"{model_dir}: the weight {name} holds NaN or inf values; {_fix_hint(model_dir)}")


def load_model(model_dir, *, dtype=None, device: str | None = None):
    """A saved PoWER-BERT model (its mode and ℓ) or a plain Hugging Face classifier, and its
    tokenizer, each checked (see the module docstring). ``dtype`` as in ``from_pretrained``."""
    cfg = check_checkpoint(model_dir, "model folder")
    tokenizer = load_tokenizer(model_dir, cfg)
    return load_classifier(model_dir, cfg, dtype=dtype, device=device), tokenizer


def _outputs(model) -> tuple[list[str] | None, int | None]:
    """(class names or None, number of outputs or None) of a classifier; None, None for multiple
    choice (one score per choice)."""
    if type(model).__name__.endswith("ForMultipleChoice"):
        return None, None
    return label_names(model), int(getattr(model.config, "num_labels", 0) or 0) or None


def check_labels_fit(model, labels, model_flag: str, model_dir, source: str) -> None:
    """PowerBertError unless a classifier's outputs are the data's classes: the same names in
    the same order when the model has names, else as many outputs. ``labels``: the data's class
    names (None: regression or unnamed: nothing to check); ``source`` names the data."""
    if labels is None:
        return
    names, count = _outputs(model)
    labels = list(labels)
    if count is None or (names is None and count == len(labels)) or names == labels:
        return
    has = f"the classes {names}" if names is not None else count_text(count, "output")
    raise PowerBertError(f"{source} has the classes {labels} but the model in {model_flag} {model_dir} has {has}: "
                         f"it was trained for other data")


def check_same_classifier(model, other, flag: str, other_dir, model_dir) -> None:
    """PowerBertError unless ``other`` (a dense baseline) is a Hugging Face classifier of the
    same architecture and classes as ``model`` (a PoWER-BERT model)."""
    if getattr(other.config, "model_type", "") == "power_bert":
        raise PowerBertError(f"{flag} {other_dir} is a PoWER-BERT model; give the dense baseline (the finetune "
                             f"stage's model)")
    mine, theirs = _base_config(model.config), other.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    diff = {k: (getattr(theirs, k, None), getattr(mine, k, None)) for k in keys
            if getattr(theirs, k, None) != getattr(mine, k, None)}
    if diff:
        raise PowerBertError(f"{flag} {other_dir} is another architecture than {model_dir} (setting: (baseline, "
                             f"model) = {diff}); give the model it was fine-tuned from")
    base_out, model_out = _outputs(other), _outputs(model)
    if base_out != model_out:
        raise PowerBertError(f"{flag} {other_dir} has other classes than {model_dir} ({base_out[0] or base_out[1]} "
                             f"against {model_out[0] or model_out[1]}); give the model it was fine-tuned from")


def label_names(model) -> list[str] | None:
    """The class names a classifier was trained with (None for regression, multiple choice or
    Hugging Face's LABEL_<i> placeholders)."""
    id2label = getattr(model.config, "id2label", None) or {}
    names = [id2label[i] for i in sorted(id2label)]
    return None if not names or names[0] == "LABEL_0" else names


def class_names(model) -> list[str] | None:
    """A classifier's class names by id, Hugging Face's ``LABEL_<i>`` placeholders included (a
    file's labels are then read as class ids, or those names); None for a model with one output
    (regression)."""
    k = int(getattr(model.config, "num_labels", 0) or 0)
    if k < 2:
        return None
    names = label_names(model)
    return names if names and len(names) == k else [f"LABEL_{i}" for i in range(k)]
