"""Where the time of the GPU path goes: host (launch) time against device time, per op and for
one model forward. A diagnosis, not a benchmark: it prints, it asserts nothing.

    python bench/profile_gpu.py [--out FILE]      # on a CUDA machine, about a minute

1. Host microseconds per call (a loop of calls, one synchronisation at the end) and device
   milliseconds (CUDA events around one call after a warm-up) of: a trivial Triton kernel, a
   small torch op, the fused attention (kernel function, op, public wrapper), extract_scored
   (CUDA C++ op), at B=32, H=12, N=128, d=64, fp16.
2. BERT-base fp16, batch 128, N=128: Hugging Face (SDPA), PoWER-BERT full mode, hard mode at a
   3x bound with fused and with eager attention: host and device time per forward.
3. cProfile of 20 hard-mode forwards (fused attention): the 30 functions with most own time.
4. torch.profiler of 5 hard-mode forwards, fused and eager attention: device time against host
   time a forward, and the kernels with most device time.
5. CUDA graphs: torch.compile(mode="reduce-overhead") of Hugging Face's model and of the hard-mode
   PoWER model, triton.testing.do_bench medians eager and compiled, and the speed-up of each.
"""
from __future__ import annotations

import argparse
import cProfile
import copy
import io
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import median_ms  # noqa: E402


def host_us(fn, calls: int = 200) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / calls * 1e6


def device_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def line(out, name, fn, calls=200):
    h = host_us(fn, calls)
    d = device_ms(fn)
    out.append(f"| {name} | {h:.1f} | {d:.4f} |")
    print(out[-1], flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import triton
    import triton.language as tl

    import power_bert_ops
    from power_bert_ops.triton import attention_triton

    out = [f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}", "",
           "| call | host us / call | device ms (events, one call) |", "|---|---|---|"]
    print("\n".join(out), flush=True)

    @triton.jit
    def _noop(X, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(X + i, tl.load(X + i, mask=i < n), mask=i < n)

    x = torch.zeros(1024, device="cuda")
    line(out, "trivial triton kernel", lambda: _noop[(8,)](x, 1024, BLOCK=128))
    line(out, "torch add_", lambda: x.add_(1))
    ops = torch.ops.power_bert
    B, H, N, d = 32, 12, 128, 64
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=torch.float16) for _ in range(3))
    mask = torch.ones(B, N, dtype=torch.long, device="cuda")
    mask[1, 100:] = 0
    seed = torch.zeros(1, dtype=torch.int64, device="cuda")
    line(out, "attention_triton.forward (no dispatcher)",
         lambda: attention_triton.forward(q, k, v, mask, 0.0, True, True, seed))
    line(out, "ops._attention_forward", lambda: ops._attention_forward(q, k, v, mask, 0.0, True, True, seed))
    line(out, "ops.attention", lambda: ops.attention(q, k, v, mask, 0.0, True, True))
    line(out, "power_bert_ops.attention", lambda: power_bert_ops.attention(q, k, v, mask))
    line(out, "F.scaled_dot_product_attention",
         lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=(mask != 0)[:, None, None, :]))
    hidden = torch.randn(B, N, H * d, device="cuda", dtype=torch.float16)
    scores = torch.randn(B, N, device="cuda")
    line(out, "ops.extract_scored k=64", lambda: ops.extract_scored(hidden, scores, mask, 64))
    row_k = torch.randint(1, 65, (B,), device="cuda")
    line(out, "ops.extract_scored per-row k, width 64", lambda: ops.extract_scored(hidden, scores, mask, 64, row_k))

    from transformers import BertConfig, BertForSequenceClassification

    from power_bert_ops.flops import retention_for_bound
    from power_bert_ops.modeling import PowerBertForSequenceClassification

    cfg = BertConfig(num_labels=2)
    torch.manual_seed(0)
    hf = BertForSequenceClassification(cfg).to("cuda", torch.float16).eval()
    hf.config._attn_implementation = "sdpa"
    power = PowerBertForSequenceClassification.from_hf_model(copy.deepcopy(hf)).eval()
    Bm, Nm = 128, 128
    ids = torch.randint(0, cfg.vocab_size, (Bm, Nm), device="cuda")
    am = torch.ones(Bm, Nm, dtype=torch.long, device="cuda")
    dims = (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size)
    ell = retention_for_bound(dims, Nm, 3.0)
    out += ["", f"BERT-base fp16, batch {Bm}, N {Nm}; hard retention {ell}", "",
            "| forward | host us / call | device ms (events, one call) |", "|---|---|---|"]
    print("\n".join(out[-5:]), flush=True)
    run = lambda: power(input_ids=ids, attention_mask=am).logits  # noqa: E731
    with torch.no_grad():
        line(out, "HF SDPA", lambda: hf(input_ids=ids, attention_mask=am).logits, 20)
        power.set_mode("full")
        line(out, "PoWER full", run, 20)
        power.set_mode("hard", retention=ell)
        for att in ("fused", "eager"):
            power.config.power_attention = att
            line(out, f"PoWER hard, {att} attention", run, 20)
        power.config.power_attention = "fused"
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20):
            run()
        torch.cuda.synchronize()
        prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
    out += ["", "cProfile, 20 hard-mode forwards (fused attention), by own time:", "```", s.getvalue()[-6000:], "```"]
    print("\n".join(out[-4:]), flush=True)

    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for att in ("fused", "eager"):
            power.config.power_attention = att
            for _ in range(3):
                run()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
                for _ in range(5):
                    run()
                torch.cuda.synchronize()
            events = trace.key_averages()
            on_device = sum(e.self_device_time_total for e in events) / 5e3
            on_host = sum(e.self_cpu_time_total for e in events) / 5e3
            out += ["", f"torch.profiler, hard mode, {att} attention: {on_device:.2f} ms of device time and "
                    f"{on_host:.2f} ms of host time (profiled) a forward", "```",
                    events.table(sort_by="device_time_total", row_limit=12, max_name_column_width=60), "```"]
            print("\n".join(out[-4:]), flush=True)

        power.config.power_attention = "auto"
        out += ["", "CUDA graphs (torch.compile mode='reduce-overhead'), do_bench medians", "",
                "| model | eager ms | CUDA graphs ms |", "|---|---|---|"]
        ms = {}
        for name, model in (("Hugging Face, SDPA", hf), ("PoWER-BERT hard", power)):
            compiled = torch.compile(model, mode="reduce-overhead")
            for _ in range(3):
                compiled(input_ids=ids, attention_mask=am)
            ms[name] = [median_ms(lambda m=m: m(input_ids=ids, attention_mask=am).logits, "cuda", rep_ms=200)
                        for m in (model, compiled)]
            out.append(f"| {name} | {ms[name][0]:.3f} | {ms[name][1]:.3f} |")
            print(out[-1], flush=True)
        hf_ms, pb_ms = ms["Hugging Face, SDPA"], ms["PoWER-BERT hard"]
        from power_bert_ops.flops import flop_bound

        out.append(f"| speed-up (FLOP bound {flop_bound(dims, ell, Nm):.2f}x) | {hf_ms[0] / pb_ms[0]:.2f}x | "
                   f"{hf_ms[1] / pb_ms[1]:.2f}x |")
        print(out[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
