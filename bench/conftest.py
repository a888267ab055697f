import os
import platform
import sys

import pytest
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


@pytest.fixture(scope="module", autouse=True)
def _plot_after_module(request):
    """After a benchmark module that defines ``speedup_plot()``, run with --benchmark-json F:
    writes its plot beside F (F's name with .png). ``speedup_plot()`` returns None (nothing
    measured) or (points, title, keyword arguments of plots.plot_speedup_vs_bound)."""
    yield
    out = request.config.getoption("benchmark_json", None)
    plot = getattr(request.module, "speedup_plot", None)
    spec = plot() if out is not None and plot is not None else None
    if spec is None:
        return
    from plots import plot_speedup_vs_bound

    points, title, kwargs = spec
    plot_speedup_vs_bound(points, os.path.splitext(getattr(out, "name", str(out)))[0] + ".png", title, **kwargs)
