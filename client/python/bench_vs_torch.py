"""Benchmark: torch.nn.utils.clip_grad_norm_ versus gradnorm.torch.clip_grad_norm_
in the same process on the same gradient tensors.

    ./scripts/python client/python/bench_vs_torch.py [--repeats N] [--device cpu|cuda]
        [--cases gpt2,10k,100k]

Cases: gpt2_124m (the 148 GPT-2 small parameter shapes) fp32 and bf16 with p = 2,
gpt2_124m fp32 with p = inf, 10k_x_1k fp32 (10,000 tensors of 1,000 elements)
and 100k_x_100 fp32 (100,000 tensors of 100 elements); each once with a
max_norm small enough that clipping happens and once large enough that it
does not. Gradients are restored from a saved copy before every call, so both
sides always see the same values; the copy is not timed. The two sides
alternate. Prints the median time of each side and the speedup (torch time /
gradnorm time). On the CPU torch runs on 2 threads (torch.set_num_threads(2));
on CUDA every call is followed by a synchronize. For 100k_x_100 it also
prints gradnorm's host cost per tensor: (its time - its time on one flat
tensor of the same bytes) / tensors, in microseconds.
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


def make_params(shapes, dtype, device):
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(dtype).to(device)
        params.append(p)
    return params


def time_pair(fn_a, fn_b, params, saved, repeats, sync):
    """Median times of fn_a and fn_b, alternated so both see the same machine
    load; one untimed warm-up call each."""
    times = ([], [])
    for i in range(repeats + 1):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            for p, g in zip(params, saved):
                p.grad.copy_(g)
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i > 0:
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def run_case(name, shapes, dtype, norm_type, repeats, device, sync):
    params = make_params(shapes, dtype, device)
    saved = [p.grad.clone() for p in params]
    total = gn.get_grad_norm(params, None, None, norm_type=norm_type)
    numel = sum(p.numel() for p in params)
    rows = []
    for label, max_norm in (("clip", total / 10), ("no clip", total * 10)):
        t_torch, t_ours = time_pair(
            lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type),
            lambda: gn.clip_grad_norm_(params, max_norm, norm_type),
            params, saved, repeats, sync)
        rows.append((label, t_torch, t_ours))
        print(f"{name:<24} {label:<8} {len(params):>6} tensors {numel / 1e6:7.1f} M  "
              f"torch {t_torch * 1e3:8.3f} ms  gradnorm {t_ours * 1e3:8.3f} ms  "
              f"speedup {t_torch / t_ours:6.2f}x", flush=True)
    return rows


def host_cost_per_tensor(rows, n, elements, repeats, device, sync):
    """(gradnorm's time on n tensors - on one tensor of all their elements)
    / n, in microseconds, for the no-clip call."""
    flat = make_params([(elements,)], torch.float32, device)
    saved = [flat[0].grad.clone()]
    total = gn.get_grad_norm(flat, None, None)
    _, t_flat = time_pair(lambda: None,
                          lambda: gn.clip_grad_norm_(flat, total * 10),
                          flat, saved, repeats, sync)
    t_many = rows[1][2]
    print(f"{'':<24} host cost per tensor {(t_many - t_flat) / n * 1e6:.3f} us "
          f"(flat tensor {t_flat * 1e3:.3f} ms)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--cases", default="gpt2,10k,100k")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cpu":
        torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} "
          f"threads, median of {args.repeats} runs")
    if "gpt2" in cases:
        gpt2 = gpt2_124m_shapes()
        run_case("gpt2_124m fp32 p=2", gpt2, torch.float32, 2.0, args.repeats,
                 device, sync)
        run_case("gpt2_124m bf16 p=2", gpt2, torch.bfloat16, 2.0, args.repeats,
                 device, sync)
        run_case("gpt2_124m fp32 p=inf", gpt2, torch.float32, math.inf,
                 args.repeats, device, sync)
    if "10k" in cases:
        run_case("10k_x_1k fp32 p=2", [(1000,)] * 10000, torch.float32, 2.0,
                 args.repeats, device, sync)
    if "100k" in cases:
        rows = run_case("100k_x_100 fp32 p=2", [(100,)] * 100000,
                        torch.float32, 2.0, max(3, args.repeats // 3), device,
                        sync)
        host_cost_per_tensor(rows, 100000, 100 * 100000,
                             max(3, args.repeats // 3), device, sync)


if __name__ == "__main__":
    main()
