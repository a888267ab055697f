"""The three-stage PoWER-BERT training pipeline (SPEC 1.4) on transformers' Trainer."""
from .pipeline import PipelineConfig, PreparedTask, StageResult, run_pipeline, run_stage
from .speed import measure_speedup

__all__ = ["PipelineConfig", "PreparedTask", "StageResult", "run_pipeline", "run_stage", "measure_speedup"]
