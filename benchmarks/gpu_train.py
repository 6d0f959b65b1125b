"""The training-step part of benchmarks/gpu_check.sh (the LIF table is gpu_bench.py's):

    python benchmarks/gpu_train.py --device cuda --md train.md [--deadline EPOCH]
    TRITON_INTERPRET=1 python benchmarks/gpu_train.py --device cpu --dry-run   # rehearsal

One training step (forward, backward, Adam) of the convolutional PLIF network of
examples/train_fashion_mnist.py (the paper's GPU setting from its docstring: 128 channels, fc
2048, T 8, batch 64) on random images, under `torch.autocast("cuda", torch.bfloat16)`:
snnfunc against an equivalent SpikingJelly 2.0 network (the same layers with
`ParametricLIFNode(init_tau=2.0, surrogate_function=ATan(), detach_reset=True,
step_mode="m")`, weights copied), eager and `torch.compile`d. Under autocast SpikingJelly's
PLIF gets bfloat16 input with its voltage in bfloat16, for which it runs its torch reference
loop (so SJ_PLIF_CUDA_IMPLEMENTATION must stay unset: naming an implementation there makes it
refuse that call on CUDA); a second SpikingJelly row uses its precision API
(`prepare_model_for_precision(..., PrecisionConfig(mode="bf16", neuron_storage="fp32"))`),
which runs its Triton PLIF with a float32 voltage. Median step time after warm-up, the first
step's time (compiling included) and peak memory.

`--dry-run` (on the CPU): PLIFNet at tiny sizes; snnfunc's Triton kernels under the interpreter
where eager, its C kernels under torch.compile; SpikingJelly on its CPU implementation (its
precision API's Triton PLIF needs a CUDA device: that row says so).
"""

from __future__ import annotations

import copy
import math
import sys
import time
import traceback
from pathlib import Path

import gpu_bench as gb  # sets SpikingJelly's CUDA implementations before it is imported
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def _plifnet():
    sys.path.insert(0, str(ROOT / "examples"))
    from train_fashion_mnist import PLIFNet

    return PLIFNet


class SJNet(nn.Module):
    """PLIFNet's layers with SpikingJelly's neurons and containers, weights copied."""

    def __init__(self, src):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        def plif():
            return neuron.ParametricLIFNode(init_tau=2.0, surrogate_function=surrogate.ATan(),
                                            detach_reset=True, step_mode="m")

        convs = [copy.deepcopy(m) for m in src.modules() if isinstance(m, nn.Conv2d)]
        bns = [copy.deepcopy(m) for m in src.modules() if isinstance(m, nn.BatchNorm2d)]
        fcs = [copy.deepcopy(m) for m in src.modules() if isinstance(m, nn.Linear)]
        self.T, self.classes, self.votes = src.T, src.classes, src.votes
        self.encoder = nn.Sequential(convs[0], bns[0])
        self.features = nn.Sequential(
            plif(), layer.SeqToANNContainer(nn.MaxPool2d(2)),
            layer.SeqToANNContainer(convs[1], bns[1]), plif(),
            layer.SeqToANNContainer(nn.MaxPool2d(2), nn.Flatten()))
        p = [m.p for m in src.modules() if isinstance(m, nn.Dropout)]
        self.classifier = nn.Sequential(nn.Dropout(p[0]), fcs[0], plif(), nn.Dropout(p[1]), fcs[1], plif())

    def forward(self, images):
        from spikingjelly.activation_based import functional as sjf

        sjf.reset_net(self)
        x = self.encoder(images)
        x_seq = x.unsqueeze(0).expand(self.T, *x.shape)
        spikes = self.classifier(self.features(x_seq))
        return spikes.unflatten(-1, (self.classes, self.votes)).mean((0, 3))


def sj_plif_implementation(device):
    if device.type != "cuda":
        return "SpikingJelly's CPU implementation"
    from spikingjelly._ops import plif as sj_ops

    sel = sj_ops._selection
    chosen = [v.name for v in sel._selections.values() if v is not None]
    chosen += [f"compile: {v.name}" for v in sel._compiled_selections.values() if v is not None]
    fallbacks = [k[1] for k, v in sel._selections.items() if v is None and isinstance(k, tuple)]
    return ", ".join(chosen + [f"torch reference ({r})" for r in fallbacks]) or "its own"


def train_part(args, out):
    device = torch.device(args.device)
    clock = gb.Clock(device)
    dry = args.dry_run
    channels, fc, T, batch = (4, 16, 2, 4) if dry else (128, 2048, 8, 64)
    steps, max_s = (2, 5.0) if dry else (20, 4.0)
    out(gb.environment(device) + ".")
    out(f"PLIFNet(channels={channels}, fc={fc}, T={T}), batch {batch}, random images and labels, "
        f"Adam, autocast {device.type} bfloat16; median of up to {steps} steps after 2 warm-up steps.")
    out()
    out("| network | mode | step (median ms) | first step (s) | peak memory (MiB) | loss | neurons ran as |")
    out("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    PLIFNet = _plifnet()
    images = torch.rand(batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    template = PLIFNet(channels, fc, T)
    if dry:
        gb.sj_refusals_as_on_cuda()
    variants = [("snnfunc", "eager"), ("SpikingJelly 2.0", "eager"),
                ("SpikingJelly 2.0, precision API (Triton PLIF, fp32 voltage)", "eager"),
                ("snnfunc", "torch.compile"), ("SpikingJelly 2.0", "torch.compile")]
    for name, mode in variants:
        if args.deadline and time.time() > args.deadline - (30 if mode == "torch.compile" else 8):
            out(f"| {name} | {mode} | not run: the part's time budget is spent | | | | |")
            gb.TALLY["not run"] += 1
            continue
        if dry:  # snnfunc's Triton kernels under the interpreter, except for Inductor
            gb.triton_on_cpu(name == "snnfunc" and mode == "eager")
        try:
            out(_train_row(clock, device, template, name, mode, images, labels, steps, max_s))
        except Exception as exc:  # noqa: BLE001  (the other variants still run)
            traceback.print_exc()
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            if dry and "requires a CUDA device" in msg:
                out(f"| {name} | {mode} | skipped in the dry run: {msg} | | | | |")
            else:
                out(f"| {name} | {mode} | failed: {type(exc).__name__}: {msg} | | | | |")
                gb.TALLY["failed"] += 1
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if dry:
        gb.triton_on_cpu(False)


def _train_row(clock, device, template, name, mode, images, labels, steps, max_s):
    torch.manual_seed(1)
    if name == "snnfunc":
        net = copy.deepcopy(template).to(device)
    else:
        net = SJNet(template).to(device)
        if "precision" in name:
            from spikingjelly.activation_based.precision.api import prepare_model_for_precision
            from spikingjelly.activation_based.precision.config import PrecisionConfig

            net = prepare_model_for_precision(
                net, device, PrecisionConfig(mode="bf16", neuron_storage="fp32")).model
    net.train()
    model = torch.compile(net, backend=gb.COMPILE_BACKEND) if mode == "torch.compile" else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            rates = model(images)
            loss = nn.functional.cross_entropy(rates.float() * 10, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    loss = step().item()
    first = time.perf_counter() - t0
    step()
    step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ms, n = clock.median_ms(step, steps, max_s)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    ran = ("fused kernels" if name == "snnfunc" and device.type == "cuda"
           else "Triton interpreter" if name == "snnfunc" and mode == "eager"
           else "C kernels" if name == "snnfunc" else sj_plif_implementation(device))
    if not math.isfinite(loss):
        ran += "; LOSS NOT FINITE"
    return (f"| {name} | {mode} | {ms:.2f} ms ({n} steps) | {first:.1f} | "
            f"{'-' if math.isnan(peak) else f'{peak:.0f}'} | {loss:.3f} | {ran} |")


if __name__ == "__main__":
    sys.exit(gb.run(train_part))
