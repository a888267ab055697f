"""The three-stage PoWER-BERT training pipeline (SPEC 1.4) on transformers' Trainer, and what
its models are used for afterwards: evaluate, predict, benchmark."""
from .errors import CorruptModelError, PowerBertError, StageSettingsError
from .inference import benchmark, evaluate, predict, predict_logits
from .pipeline import PipelineConfig, StageResult, run_pipeline, run_stage
from .prepare import DataArgs, PreparedTask, prepare
from .run import DTYPES, finish_run, train
from .speed import measure_speedup

__all__ = [
    "CorruptModelError", "DTYPES", "DataArgs", "PipelineConfig", "PowerBertError", "PreparedTask", "StageResult",
    "StageSettingsError", "benchmark", "evaluate", "finish_run", "measure_speedup", "predict", "predict_logits",
    "prepare", "run_pipeline", "run_stage", "train",
]
