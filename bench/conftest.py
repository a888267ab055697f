import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what a reader needs to reproduce the figures."""
    import power_bert_ops

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    machine_info.update(
        torch_version=torch.__version__,
        triton_version=triton_version,
        power_bert_version=power_bert_ops.__version__,
        power_bert_cuda=power_bert_ops.built_with_cuda(),
        torch_threads=torch.get_num_threads(),
        cuda_device=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        platform=platform.platform(),
        command="python -m pytest " + " ".join(config.invocation_params.args),
    )
