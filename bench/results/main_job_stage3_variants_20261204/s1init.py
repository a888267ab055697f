"""Experiment: stage 3 starts from the stage-1 (fine-tuned) weights instead of the search's, with
the searched ℓ; everything else the CLI's retrain. Usage: python s1init.py <cli retrain args...>"""
import sys
from pathlib import Path
import torch
import power_bert_ops.training.stages as st
from power_bert_ops.modeling import PowerBertForSequenceClassification
from transformers import AutoModelForSequenceClassification

orig = st._plan_retrain


def plan(cfg, task, previous):
    p = orig(cfg, task, previous)
    hf = AutoModelForSequenceClassification.from_pretrained(Path(cfg.output_dir) / "finetune" / "model")
    dense = PowerBertForSequenceClassification.from_hf_model(hf).state_dict()
    sd = p.model.state_dict()
    keep = {k: v for k, v in dense.items() if "retention_params" not in k}
    missing = p.model.load_state_dict(keep, strict=False)
    print("stage 3 from stage-1 weights:", len(keep), "tensors; not loaded:", missing.missing_keys, flush=True)
    return p


st._plan_retrain = plan
st.STAGE_TABLE["retrain"] = st.Stage(plan, st._finish_retrain)
from power_bert_ops import cli
sys.exit(cli.main(sys.argv[1:]))
