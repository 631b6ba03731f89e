"""Benchmark: torch.nn.utils.clip_grad_norm_ versus gradnorm.torch.clip_grad_norm_
in the same process on the same gradient tensors (CPU, torch.set_num_threads(2)).

    ./scripts/python client/python/bench_vs_torch.py [--repeats N]

Cases: gpt2_124m (the 148 GPT-2 small parameter shapes) fp32 and bf16 with p = 2,
gpt2_124m fp32 with p = inf, and 10k_x_1k fp32 (10,000 tensors of 1,000
elements); each once with a max_norm small enough that clipping happens and once
large enough that it does not. Gradients are restored from a saved copy before
every call, so both sides always see the same values; the copy is not timed.
The two sides alternate. Prints the median time of each side and the speedup (torch time / gradnorm time).
"""

import argparse
import math
import statistics
import time

import torch

import gradnorm.torch as gn


def gpt2_124m_shapes():
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,),
                   (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    shapes += [(d,), (d,)]
    assert len(shapes) == 148
    return shapes


def make_params(shapes, dtype):
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, dtype=dtype))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(dtype)
        params.append(p)
    return params


def time_pair(fn_a, fn_b, params, saved, repeats):
    """Median times of fn_a and fn_b, alternated so both see the same machine
    load; one untimed warm-up call each."""
    times = ([], [])
    for i in range(repeats + 1):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            for p, g in zip(params, saved):
                p.grad.copy_(g)
            start = time.perf_counter()
            fn()
            if i > 0:
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def run_case(name, shapes, dtype, norm_type, repeats):
    params = make_params(shapes, dtype)
    saved = [p.grad.clone() for p in params]
    total = gn.get_grad_norm(params, None, None, norm_type=norm_type)
    numel = sum(p.numel() for p in params)
    rows = []
    for label, max_norm in (("clip", total / 10), ("no clip", total * 10)):
        t_torch, t_ours = time_pair(
            lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type),
            lambda: gn.clip_grad_norm_(params, max_norm, norm_type),
            params, saved, repeats)
        rows.append((label, t_torch, t_ours))
        print(f"{name:<24} {label:<8} {len(params):>6} tensors {numel / 1e6:7.1f} M  "
              f"torch {t_torch * 1e3:8.3f} ms  gradnorm {t_ours * 1e3:8.3f} ms  "
              f"speedup {t_torch / t_ours:6.2f}x", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} runs")
    gpt2 = gpt2_124m_shapes()
    run_case("gpt2_124m fp32 p=2", gpt2, torch.float32, 2.0, args.repeats)
    run_case("gpt2_124m bf16 p=2", gpt2, torch.bfloat16, 2.0, args.repeats)
    run_case("gpt2_124m fp32 p=inf", gpt2, torch.float32, math.inf, args.repeats)
    run_case("10k_x_1k fp32 p=2", [(1000,)] * 10000, torch.float32, 2.0,
             args.repeats)


if __name__ == "__main__":
    main()
