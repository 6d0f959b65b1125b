"""Whole networks: one training step (forward, loss, backward, Adam) and its peak memory.

    python benchmarks/bench_networks.py                          # all networks, 1 and 2 threads, jemalloc
    python benchmarks/bench_networks.py --quick                  # 3 repeats, 1 profiled step, 1 thread
    python benchmarks/bench_networks.py --networks conv-plif --threads 1 --allocators glibc
    python benchmarks/bench_networks.py --diagnose               # compiled against eager, conv PLIF, candidate fixes
    python benchmarks/bench_networks.py --diagnose --low-memory  # the same with PLIFNet(low_memory=True)
    python benchmarks/bench_networks.py --save a.json ...        # later: --report a.json b.json (tables again)

Three networks, each in six configurations (the conv PLIF network in eight) built from the same
initial weights:

- ``conv-plif``: the convolutional PLIF network of ``examples/train_fashion_mnist.py`` (Fang
  et al. 2021: a static Conv-BN encoder computed once per image and fed at every step, PLIF,
  max-pool, Conv-BN, PLIF, max-pool, dropout, fc 256, PLIF, dropout, fc 100, PLIF, voting);
  32 channels, batch 32, T = 8, 28x28 inputs.
- ``sew-resnet18``: SEW-ResNet-18 for 32x32 inputs (``examples/models/sew_resnet.py``: IF
  neurons, ATan surrogate, detached reset, ADD connections), T = 4, batch 16, the image
  repeated over the T steps; SpikingJelly's side is its own ``sew_resnet18`` with the same
  CIFAR adjustments (``tests/test_models.py`` checks that both compute the same).
- ``alif-rnn``: SHD's dimensions: 700 input spikes, a recurrent layer of 256 ALIF neurons
  (adaptive threshold), 20 outputs (the readout averaged over time), T = 250, batch 64.

Configurations:

- ``snnfunc eager`` / ``snnfunc compiled``: the network as a user writes it with snnfunc's
  adapters (``PLIFNode``, ``IFNode``, ``TimeDistributed``, ``Recurrent(neuron=snnfunc.alif)``),
  run eagerly, and under ``torch.compile(net)`` (default options, as the examples do).
- ``snnfunc eager, packed spikes``: eager, the forward and the loss under
  ``snnfunc.memory.packed_spikes()`` (every spike tensor a layer saves for backward stored as
  bits; the gradients are bit for bit the same).
- ``snnfunc eager, low memory`` / ``snnfunc compiled, low memory`` (``conv-plif`` only): the
  example's ``PLIFNet(low_memory=True)``, the same function and weights: max-pools that save
  one byte per output (``snnfunc.memory.MaxPool2d``), the static encoder recomputed in the
  backward pass (``snnfunc.memory.recompute``; eager only), the neurons' final states let go
  at the end of the forward pass. Gradients bit for bit those of ``snnfunc eager`` (eager) and
  of ``snnfunc compiled`` (compiled).
- ``snnfunc eager, low memory, channels-last`` / ``snnfunc compiled, low memory,
  channels-last`` / ``..., fallback_random`` (``conv-plif`` only): the same network made
  channels-last (``net.to(memory_format=torch.channels_last)``, channels-last images), so its
  activations and gradients are too: the neurons and ``memory.MaxPool2d`` read and write that
  layout in place, and nothing converts between layers; eagerly, compiled, and compiled with
  Inductor's ``fallback_random=True`` (dropout's masks from ATen's generator).
- ``snnfunc eager, low memory, packed spikes`` (``sew-resnet18`` only): the model's
  ``low_memory=True`` (each batch norm and its neuron, and the downsampling branch, run
  again in the backward pass: ``snnfunc.memory.recompute``) under ``packed_spikes()``; the
  gradients bit for bit those of ``snnfunc eager``.
- ``snnfunc eager, spike input`` / ``snnfunc compiled, spike input`` (``alif-rnn`` only): the
  input layer a ``snnfunc.nn.SpikeLinear`` (``torch.nn.Linear`` that adds the weight's columns
  where the input spikes, rather than multiplying by every 0; the same weights, results to
  rounding), the rest as ``snnfunc eager`` / ``snnfunc compiled``.
- ``snnfunc eager, input in layer`` / ``snnfunc eager, input in layer, packed spikes`` /
  ``snnfunc compiled, input in layer`` (``alif-rnn`` only): the input weight inside the
  recurrent layer, ``Recurrent(256, in_features=700, sparse_input=True, sparse_recurrent=True)``
  (the same weights; its input and recurrent products as ``SpikeLinear``'s, results to
  rounding), which computes its input currents in the place of the product it makes (one
  ``[T, B, 256]`` tensor fewer), and a ``SpikeLinear`` readout; eager, eager under
  ``packed_spikes()``, compiled.
- ``SpikingJelly eager`` / ``SpikingJelly compiled``: SpikingJelly 2.0's neurons
  (``ParametricLIFNode``, ``IFNode`` in multi-step mode, its CPU path; the ALIF neuron, which it
  does not have, written as its documentation says to write a custom neuron, a
  ``SimpleBaseNode`` subclass), eagerly and under ``torch.compile``; for ``conv-plif`` also
  eagerly with the network channels-last (``SpikingJelly eager, channels-last``), one of the
  configurations its best is taken over.
- ``plain loop compiled``: the same network with every neuron written as a plain Python loop
  over the time steps in torch operations (a surrogate spike function as a
  ``torch.autograd.Function``), under ``torch.compile``: what Inductor makes of the
  unfused loop.

For the ALIF network the two compiled time loops (SpikingJelly's and the plain loop) are
compiled in chunks of ``--chunk`` steps (one compiled chunk function, the state carried from
chunk to chunk): 250 steps unrolled into one graph take Inductor too long to compile.

What is measured, each (network, threads, allocator) in its own process (by default 1 and 2
threads, SEW-ResNet-18 1 thread only: 80-90% of its step is oneDNN's convolutions, whose
scaling with threads is oneDNN's, and its three compiles take minutes):

- **Time**: the median (min-max) over ``--repeats`` training steps of each configuration,
  timed in rounds that alternate between the configurations (a busy moment of a shared
  machine falls on all of them alike), after two warm-up steps. A step is ``zero_grad``,
  forward, loss, backward, ``Adam.step``, the neurons' state reset included.
- **CPU time** (1 thread only): the same steps' CPU time of the thread that runs them
  (``time.thread_time``; at 1 thread every kernel runs on it: OpenMP's one thread, oneDNN,
  Inductor's kernels, autograd's CPU backward). Unlike the wall time it leaves out the time
  other processes of a shared machine held the core, so its ratios hold when the wall time's
  spread is wide.
- **Compile**: the wall time of the first step of a compiled configuration (compilation of
  forward and backward included) in a process whose Inductor cache directory is empty (each
  process gets a new one) and whose Inductor has already compiled a trivial function (its
  one-time start-up is not charged to the first network compiled).
- **Peak memory**: the high-water mark of the bytes of tensors allocated during one training
  step and alive at once, from the profiler's memory events (every tensor torch allocates,
  Inductor's buffers included), above what was alive when the step began (parameters, Adam's
  state, the input). It counts the activations saved for backward, the gradients and every
  temporary; it does not count what the allocator keeps cached, nor the fused kernels' few
  rows of scratch memory (a few hundred KiB, from malloc). RSS would mix in the allocator's
  caching and, for the compiled configurations, the compiler's own memory.
- **Where the time goes**: one profiled step (``torch.profiler``, CPU, with memory), every
  operator's self time put in one category: *neurons* (snnfunc's and SpikingJelly's neuron
  operators, and every operator run inside a neuron module in eager mode, their backward
  nodes found by autograd's sequence numbers), *conv/matmul*, *pooling*, *batch norm*,
  *dropout* (its random mask included), *copies* (``copy_``, ``clone``, ``cat``, ``stack``,
  ``fill_``, ``zero_``), *elementwise/other* (the remaining operators, and Inductor's fused
  kernels named after none of the above: for the compiled plain loop and compiled SpikingJelly
  ALIF this holds the neurons' arithmetic, which Inductor fuses with its neighbours), and
  *optimizer* (``Adam.step`` and ``zero_grad``); *framework* is the rest of the step's wall
  time (Python, autograd's engine, Dynamo's guards, the profiler's own cost). Inductor's kernels
  are named in the profile (``torch._inductor.config.cpp.enable_kernel_profile``, set for every
  compiled configuration), after the operators they were fused from.

Allocators, each in its own process: glibc's default (which returns large blocks to the system
when freed, so that the next step page-faults them in again), and jemalloc
(``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`` with
``MALLOC_CONF=oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1``,
freed memory kept for reuse; Debian: ``apt-get install libjemalloc2``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "examples" / "models")]

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MALLOC_CONF = ("oversize_threshold:1,background_thread:true,metadata_thp:auto,"
               "dirty_decay_ms:-1,muzzy_decay_ms:-1")
NETWORKS = ("conv-plif", "sew-resnet18", "alif-rnn")
CONFIGS = ("snnfunc eager", "snnfunc eager, packed spikes", "snnfunc eager, low memory",
           "snnfunc eager, low memory, packed spikes", "snnfunc compiled",
           "snnfunc compiled, low memory", "snnfunc eager, low memory, channels-last",
           "snnfunc compiled, low memory, channels-last",
           "snnfunc compiled, low memory, channels-last, fallback_random",
           "snnfunc eager, spike input", "snnfunc compiled, spike input",
           "snnfunc eager, input in layer", "snnfunc eager, input in layer, packed spikes",
           "snnfunc compiled, input in layer", "SpikingJelly eager", "SpikingJelly compiled",
           "SpikingJelly eager, channels-last", "plain loop compiled")
OURS = [c for c in CONFIGS if c.startswith("snnfunc")]
# threads when --threads is not given: SEW-ResNet-18 spends 80-90% of its step in oneDNN's
# convolutions (their scaling with threads is oneDNN's) and its compiles take minutes
DEFAULT_THREADS = {"conv-plif": (1, 2), "sew-resnet18": (1,), "alif-rnn": (1, 2)}
CATEGORIES = ("neurons", "conv/matmul", "pooling", "batch norm", "dropout", "copies",
              "elementwise/other", "optimizer", "framework")
ALIF = dict(tau=5.0, tau_adapt=50.0, beta=0.5)  # the ALIF layer's constants (all three sides)


# --------------------------------------------------------------------------- plain-torch neurons


class ATanSpike(torch.autograd.Function):
    """Heaviside forward, ATan surrogate backward: alpha / 2 / (1 + (pi/2 alpha u)^2)."""

    @staticmethod
    def forward(ctx, u, alpha):
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        a = ctx.alpha
        return g * (a / 2) / (1 + (math.pi / 2 * a * u) ** 2), None


def spike(u):
    return ATanSpike.apply(u, 2.0)


class PlainPLIF(nn.Module):
    """PLIF (sigmoid parametrisation, decay_input, hard reset to 0, detached reset)."""

    def __init__(self, init_tau=2.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((1,), -math.log(init_tau - 1.0)))

    def forward(self, x_seq):
        # materialised, as snnfunc's kernel does: on the static encoder's stride-0 expanded
        # input Inductor's compile time grows exponentially with T (11, 31, 144 s at T = 2, 4,
        # 6 for this neuron and a max-pool on 2 cores)
        x_seq = x_seq.contiguous()
        k = torch.sigmoid(self.w)
        v = torch.zeros_like(x_seq[0])
        out = []
        for x in x_seq:
            h = v + (x - v) * k
            s = spike(h - 1.0)
            v = h * (1.0 - s.detach())
            out.append(s)
        return torch.stack(out)


class PlainIF(nn.Module):
    """IF (hard reset to 0, detached reset)."""

    def forward(self, x_seq):
        v = torch.zeros_like(x_seq[0])
        out = []
        for x in x_seq:
            h = v + x
            s = spike(h - 1.0)
            v = h * (1.0 - s.detach())
            out.append(s)
        return torch.stack(out)


def plain_alif_chunk(x_seq, state, weight, bias, tau, tau_adapt, beta):
    """A chunk of the recurrent ALIF layer, snnfunc.rnn's equations: I_t = X_t + W S_{t-1} + b,
    A' = A - A/tau_a, H = V + (I - V)/tau, S = H >= 1 + beta A', V = H (1 - S), A = A' + S
    (the reset and the adaptation's jump detached)."""
    v, a, s = state
    out = []
    for x in x_seq:
        i = x + bias if s is None else x + nn.functional.linear(s, weight, bias)
        a = a - a / tau_adapt
        h = v + (i - v) / tau
        s = spike(h - (1.0 + beta * a))
        sd = s.detach()
        v = h * (1.0 - sd)
        a = a + sd
        out.append(s)
    return torch.stack(out), (v, a, s)


class PlainALIFRecurrent(nn.Module):
    def __init__(self, features, chunk):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(features, features))
        self.bias = nn.Parameter(torch.empty(features))
        self.chunk = chunk
        self.run = plain_alif_chunk

    def forward(self, x_seq):
        zero = x_seq.new_zeros(x_seq.shape[1:])
        state, out = (zero, zero, None), []
        for c in range(0, x_seq.shape[0], self.chunk):
            s, state = self.run(x_seq[c:c + self.chunk], state, self.weight, self.bias, **ALIF)
            out.append(s)
        return torch.cat(out)


# --------------------------------------------------------------------------- SpikingJelly's side


def sj_plif(_):
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.ParametricLIFNode(init_tau=2.0, surrogate_function=surrogate.ATan(),
                                    detach_reset=True, step_mode="m")


def sj_alif_node():
    """ALIF as SpikingJelly's documentation says to write a custom neuron: a SimpleBaseNode
    subclass (charge, fire, reset), in single-step mode inside the recurrent loop."""
    from spikingjelly.activation_based import surrogate
    from spikingjelly.activation_based.neuron import SimpleBaseNode

    class ALIFNode(SimpleBaseNode):
        def __init__(self, tau, tau_adapt, beta):
            super().__init__(v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan(),
                             detach_reset=True, step_mode="s")
            self.register_memory("a", 0.0)
            self.tau, self.tau_adapt, self.beta = tau, tau_adapt, beta

        def neuronal_charge(self, x):
            self.a = self.a - self.a / self.tau_adapt
            self.v = self.v + (x - self.v) / self.tau

        def neuronal_fire(self):
            return self.surrogate_function(self.v - (self.v_threshold + self.beta * self.a))

        def single_step_forward(self, x):
            s = super().single_step_forward(x)  # charge, fire, reset (detached)
            self.a = self.a + s.detach()
            return s

    return ALIFNode(**ALIF)


class SJRecurrent(nn.Module):
    """The recurrent layer around SpikingJelly's neuron: I_t = X_t + W S_{t-1} + b, one step of
    the neuron (SpikingJelly's LinearRecurrentContainer computes the same with one Linear over
    [X_t, S_{t-1}], one more matmul per step)."""

    def __init__(self, features, chunk):
        super().__init__()
        self.rc = nn.Linear(features, features)
        self.node = sj_alif_node()
        self.chunk = chunk
        self.run = self._run

    def _run(self, x_seq, s):
        out = []
        for x in x_seq:
            s = self.node(x + self.rc.bias if s is None else x + self.rc(s))
            out.append(s)
        return torch.stack(out), s

    def forward(self, x_seq):
        s, out = None, []
        for c in range(0, x_seq.shape[0], self.chunk):
            y, s = self.run(x_seq[c:c + self.chunk], s)
            out.append(y)
        return torch.cat(out)


# --------------------------------------------------------------------------- the networks


def swap(net, kind, factory):
    """Every submodule of type `kind` replaced by `factory(old)`."""
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, kind):
                setattr(m, name, factory(child))
    return net


def copy_weights(src: nn.Module, dst: nn.Module, key=lambda k: k):
    """dst's parameters and buffers from src's, `key` mapping src's names onto dst's (values
    reshaped where the two keep one value in different shapes)."""
    own = dst.state_dict()
    new = {}
    for k, v in src.state_dict().items():
        target = own[key(k)]
        new[key(k)] = v.reshape(target.shape).clone()
    dst.load_state_dict(new)


class ALIFNet(nn.Module):
    def __init__(self, rec, inputs=700, hidden=256, outputs=20, linear=nn.Linear, readout=nn.Linear):
        super().__init__()
        self.fc1 = nn.Identity() if linear is None else linear(inputs, hidden, bias=False)
        self.rec = rec
        self.fc2 = readout(hidden, outputs)

    def forward(self, x_seq):  # [T, B, 700] spikes -> logits [B, 20]
        return self.fc2(self.rec(self.fc1(x_seq))).mean(0)


def build(network: str, chunk: int):
    """{config: (eager module, reset)}, the input, the targets and the loss, one set of weights."""
    import snnfunc
    from snnfunc import nn as snn
    from snnfunc import surrogate

    torch.manual_seed(0)
    if network == "conv-plif":
        from train_fashion_mnist import PLIFNet

        ours = PLIFNet(channels=32, fc=256, T=8)
        low = PLIFNet(channels=32, fc=256, T=8, low_memory=True)
        low.load_state_dict(ours.state_dict())
        sj = swap(copy.deepcopy(ours), snn.PLIFNode, sj_plif)
        plain = swap(copy.deepcopy(ours), snn.PLIFNode, lambda _: PlainPLIF())
        copy_weights(ours, sj)
        copy_weights(ours, plain)
        x = torch.rand(32, 1, 28, 28)
        y = torch.randint(0, 10, (32,))
        loss = lambda out: nn.functional.cross_entropy(out * 10, y)  # noqa: E731  rates, as the example
    elif network == "sew-resnet18":
        from sew_resnet import load_spikingjelly_state_dict, sew_resnet18_cifar, spikingjelly_sew_resnet18_cifar

        ours = sew_resnet18_cifar(num_classes=10)
        sj = spikingjelly_sew_resnet18_cifar(num_classes=10)
        load_spikingjelly_state_dict(ours, sj.state_dict())
        low = sew_resnet18_cifar(num_classes=10, low_memory=True)
        low.load_state_dict(ours.state_dict())
        plain = swap(copy.deepcopy(ours), snn.IFNode, lambda _: PlainIF())
        x = torch.rand(16, 3, 32, 32).unsqueeze(0).repeat(4, 1, 1, 1, 1)  # T = 4
        y = torch.randint(0, 10, (16,))
        loss = lambda out: nn.functional.cross_entropy(out.mean(0), y)  # noqa: E731
    elif network == "alif-rnn":
        rec = snn.Recurrent(256, neuron=snnfunc.alif, surrogate=surrogate.ATan(), detach_reset=True,
                            **ALIF)
        ours = ALIFNet(rec)
        with torch.no_grad():
            ours.fc1.weight.mul_(32.0)  # enough input current to fire (printed below)
        sj = ALIFNet(SJRecurrent(256, chunk))
        copy_weights(ours, sj, lambda k: k.replace("rec.weight", "rec.rc.weight")
                     .replace("rec.bias", "rec.rc.bias"))
        plain = ALIFNet(PlainALIFRecurrent(256, chunk))
        copy_weights(ours, plain)
        spiky = ALIFNet(copy.deepcopy(rec), linear=snn.SpikeLinear)
        spiky.load_state_dict(ours.state_dict())
        inner = ALIFNet(snn.Recurrent(256, neuron=snnfunc.alif, in_features=700, sparse_input=True,
                                      sparse_recurrent=True, surrogate=surrogate.ATan(),
                                      detach_reset=True, **ALIF),
                        linear=None, readout=snn.SpikeLinear)
        inner.load_state_dict({k.replace("fc1.weight", "rec.input_weight"): v
                               for k, v in ours.state_dict().items()})
        x = (torch.rand(250, 64, 700) < 0.05).float()
        y = torch.randint(0, 20, (64,))
        with torch.no_grad():
            rate = ours.rec(ours.fc1(x)).mean().item()
        ours.rec.reset()
        print(f"    the recurrent layer fires at {100 * rate:.1f}% of its neuron-steps", flush=True)
        loss = lambda out: nn.functional.cross_entropy(out, y)  # noqa: E731
    else:
        raise ValueError(network)
    nets = {"snnfunc eager": ours, "snnfunc eager, packed spikes": copy.deepcopy(ours),
            "snnfunc compiled": copy.deepcopy(ours),
            "SpikingJelly eager": sj, "SpikingJelly compiled": copy.deepcopy(sj),
            "plain loop compiled": plain}
    if network == "conv-plif":
        nets.update({"snnfunc eager, low memory": low, "snnfunc compiled, low memory": copy.deepcopy(low)})
        # channels-last: the convolutions' weights and the images (Step), so every layer's
        # activations and gradients; snnfunc's neurons and max-pools keep the layout in place
        cl = lambda net: copy.deepcopy(net).to(memory_format=torch.channels_last)  # noqa: E731
        nets.update({c: cl(low) for c in ("snnfunc eager, low memory, channels-last",
                                          "snnfunc compiled, low memory, channels-last",
                                          "snnfunc compiled, low memory, channels-last, fallback_random")})
        nets["SpikingJelly eager, channels-last"] = cl(sj)
    if network == "sew-resnet18":
        nets["snnfunc eager, low memory, packed spikes"] = low
    if network == "alif-rnn":
        nets.update({"snnfunc eager, spike input": spiky,
                     "snnfunc compiled, spike input": copy.deepcopy(spiky),
                     "snnfunc eager, input in layer": inner,
                     "snnfunc eager, input in layer, packed spikes": copy.deepcopy(inner),
                     "snnfunc compiled, input in layer": copy.deepcopy(inner)})
    return nets, x, y, loss


def compiled(config, net, network):
    """The module a step calls: the net itself, or compiled (the ALIF network's Python time
    loops compiled chunk by chunk)."""
    if "compiled" not in config:
        return net
    if network == "alif-rnn" and not config.startswith("snnfunc"):
        net.rec.run = torch.compile(net.rec.run)
        return net
    # fallback_random: dropout's masks drawn by ATen's generator (docs/compile.md)
    return torch.compile(net, options={"fallback_random": True} if "fallback_random" in config else None)


# --------------------------------------------------------------------------- measuring


def reset(net):
    for m in net.modules():
        r = getattr(m, "reset", None)
        if callable(r) and not isinstance(m, nn.Linear):
            r()


class Step:
    def __init__(self, config, net, network, x, loss):
        import contextlib

        from snnfunc import memory

        if "channels-last" in config:
            x = x.contiguous(memory_format=torch.channels_last)
        self.net, self.x, self.loss = net, x, loss
        self.model = compiled(config, net, network)
        self.opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        # packed: every spike tensor saved for backward stored as bits (bit for bit the same gradients)
        self.context = memory.packed_spikes if "packed" in config else contextlib.nullcontext

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        reset(self.net)
        with self.context():
            out = self.model(self.x)
            loss = self.loss(out)
        loss.backward()
        self.opt.step()
        return loss.detach()


def neuron_types():
    from snnfunc import nn as snn

    kinds = [snn.BaseNode, snn.NeuronNode, PlainPLIF, PlainIF]
    try:
        from spikingjelly.activation_based.neuron import BaseNode, SimpleBaseNode

        kinds += [BaseNode, SimpleBaseNode]
    except ImportError:
        pass
    return tuple(kinds)


def profile_steps(step, eager: bool, n: int):
    """`n` steps under the profiler: the median wall ms, the median ms of every category
    (so that a busy moment of a shared machine weighs little), the largest peak bytes."""
    runs = [profile_step(step, eager) for _ in range(n)]
    wall = statistics.median(r[0] for r in runs)
    cats = {c: statistics.median(r[1][c] for r in runs) for c in CATEGORIES}
    return wall, cats, max(r[2] for r in runs)


def profile_step(step, eager: bool):
    """One step under the profiler: (wall ms, {category: ms}, peak bytes)."""
    from torch.profiler import ProfilerActivity, profile

    hooks = []
    if eager:  # a profiler range around every neuron module's forward
        for m in step.net.modules():
            if isinstance(m, neuron_types()):
                stack = []

                def pre(mod, args, stack=stack):
                    rf = torch.autograd.profiler.record_function("snn:neuron")
                    rf.__enter__()
                    stack.append(rf)

                def post(mod, args, out, stack=stack):
                    stack.pop().__exit__(None, None, None)

                hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    step.opt.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t0 = time.perf_counter()
        step()
        wall = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    return 1e3 * wall, categories(prof, 1e3 * wall), peak_bytes(prof)


def peak_bytes(prof) -> int:
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


_WRAPPERS = ("autograd::engine::evaluate_function", "CompiledFunction", "## ", "Torch-Compiled Region",
             "TorchDynamo", "snn:neuron", "torch::autograd::AccumulateGrad", "[memory]")
_NEURON_OPS = ("snnfunc::", "sj_", "DefinedNeuron", "_RNN", "ATanSpike")


def _by_name(name: str):
    n = name.lower()
    if "spike_linear" in n or "spikelinear" in n:  # snnfunc's product of a spike input
        return "conv/matmul"
    if "pool" in n:
        return "pooling"
    if "batch_norm" in n:
        return "batch norm"
    if "dropout" in n or "bernoulli" in n:
        return "dropout"
    if (n.startswith("aten::") and any(k in n for k in ("conv", "::mm", "addmm", "bmm", "matmul", "linear")))\
            or "convolution" in n:
        return "conv/matmul"
    if any(k in n for k in ("aten::copy_", "aten::clone", "aten::fill_", "aten::zero_", "aten::cat",
                            "aten::stack")):
        return "copies"
    return None


def categories(prof, wall_ms) -> dict:
    events = [e for e in prof.events() if e.name != "[memory]"]
    neuron_seq = set()
    for e in events:  # forward operators inside a neuron: their backward nodes are the neuron's too
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::engine") and _inside(e, _is_neuron):
            neuron_seq.add(e.sequence_nr)
    out = dict.fromkeys(CATEGORIES, 0.0)
    for e in events:
        ms = e.self_cpu_time_total / 1e3
        out[_category(e, neuron_seq)] += ms
    out["framework"] += max(0.0, wall_ms - sum(out.values()))
    return out


def _is_neuron(e):
    return e.name == "snn:neuron" or e.name.startswith(_NEURON_OPS)


def _inside(e, pred):
    while e is not None:
        if pred(e):
            return True
        e = e.cpu_parent
    return False


def _category(e, neuron_seq):
    if _inside(e, lambda p: p.name.startswith(("Optimizer.step", "Optimizer.zero_grad"))):
        return "optimizer"
    named = _by_name(e.name)
    if named is not None:
        return named
    in_neuron = _inside(e, lambda p: _is_neuron(p) or (
        p.name.startswith("autograd::engine::evaluate_function") and p.sequence_nr in neuron_seq))
    if e.name.startswith(_WRAPPERS) or (e.name.endswith("Backward0") and not in_neuron):
        return "framework"
    if in_neuron:
        return "neurons"
    return "elementwise/other"


def time_rounds(steps: dict, repeats: int, cpu: dict | None = None) -> dict:
    """Per config, step times (s), in rounds alternating between the configs, the order
    rotated every round. With `cpu` (a dict), also the CPU time of this thread per step (s)
    into `cpu[config]`: at 1 thread every kernel runs on it (OpenMP's one thread, oneDNN,
    Inductor's kernels, autograd's CPU backward), and unlike the wall time it does not count
    the time other processes of a shared machine held the core."""
    times = {k: [] for k in steps}
    if cpu is not None:
        cpu.update({k: [] for k in steps})
    keys = list(steps)
    for r in range(repeats if keys else 0):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            t0, c0 = time.perf_counter(), time.thread_time()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu[k].append(time.thread_time() - c0)
    return times


def allocator_name() -> str:
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    return "jemalloc" if "jemalloc" in maps else "glibc"


def warm_inductor():
    """Inductor's one-time start-up (imports, the compile workers) on a trivial function.
    Also lifts Dynamo's limit of 8 graphs per function: the configurations are copies of one
    network class, and every copy is a new graph (the adapters' guards hold the identity of
    their surrogate objects); past the limit Dynamo would silently run the rest eagerly."""
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 512
    f = torch.compile(lambda t: (t * 2).sum())
    f(torch.ones(8, requires_grad=True)).backward()


def child(args) -> dict:
    torch.set_num_threads(args.threads)
    torch._inductor.config.cpp.enable_kernel_profile = True
    out = {"allocator": allocator_name(), "threads": torch.get_num_threads(),
           "load_start": os.getloadavg()[0], "results": {}}
    warm_inductor()
    nets, x, y, loss = build(args.network, args.chunk)
    configs = [c for c in CONFIGS if (args.configs is None or c in args.configs) and c in nets]
    steps, res = {}, {}
    for config in configs:
        step = Step(config, nets[config], args.network, x, loss)
        torch.manual_seed(1)
        t0 = time.perf_counter()
        first_loss = step()
        first = time.perf_counter() - t0
        step()  # a second warm-up (allocations of Adam's state are made in the first)
        steps[config] = step
        res[config] = {"first_s": first, "first_loss": float(first_loss)}
        print(f"    {config}: first step {first:.1f} s, loss {float(first_loss):.4f}", flush=True)
    cpu = {}
    times = time_rounds(steps, args.repeats, cpu)
    for config, step in steps.items():
        t, c = times[config], cpu[config]
        wall, cats, peak = profile_steps(step, "compiled" not in config, args.profile_steps)
        res[config].update(ms=1e3 * statistics.median(t), ms_min=1e3 * min(t), ms_max=1e3 * max(t),
                           cpu_ms=1e3 * statistics.median(c), cpu_ms_min=1e3 * min(c),
                           cpu_ms_max=1e3 * max(c), profiled_ms=wall, categories=cats,
                           peak_mib=peak / 2**20)
    out["results"] = res
    out["load_end"] = os.getloadavg()[0]
    return out


# --------------------------------------------------------------------------- the driver


def env_for(allocator, cache_dir):
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "MALLOC_CONF"):
        env.pop(name, None)
    if allocator == "jemalloc":
        env["LD_PRELOAD"] = JEMALLOC
        env["MALLOC_CONF"] = MALLOC_CONF
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_child(argv, allocator, cache):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--child", "--json", f.name, *argv]
        proc = subprocess.run(cmd, env=env_for(allocator, cache))
        if proc.returncode:
            return None
        res = json.loads(Path(f.name).read_text())
    if res["allocator"] != allocator:
        sys.exit(f"asked for {allocator}, the child process ran {res['allocator']}")
    return res


def table(title, header, body):
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        print(line(r))


def report(runs):
    """runs: [(network, threads, allocator, child result)]."""
    header = ["network", "threads", "allocator", "configuration", "step ms, median (min-max)",
              "CPU ms, median (min-max)", "CPU / SJ best", "compile s", "peak MiB", "time / SJ best",
              "memory / SJ least"]
    body, checks = [], []
    for network, threads, alloc, out in runs:
        res = out["results"]
        sj = {c: res[c] for c in ("SpikingJelly eager", "SpikingJelly compiled",
                                  "SpikingJelly eager, channels-last") if c in res}
        sj_best = min((r["ms"] for r in sj.values()), default=None)
        sj_cpu = min(sj.values(), key=lambda r: r.get("cpu_ms", math.inf), default=None)
        sj_mem = min((r["peak_mib"] for r in sj.values()), default=None)
        for config, r in res.items():
            body.append([network, str(threads), alloc, config,
                         f"{r['ms']:.1f} ({r['ms_min']:.1f}-{r['ms_max']:.1f})",
                         *cpu_cells(r, threads, sj_cpu),
                         (f"{r['first_s']:.1f}" + ("" if out.get("cold_cache", True) else " (warm)"))
                         if "compiled" in config else "-",
                         f"{r['peak_mib']:.1f}",
                         f"{r['ms'] / sj_best:.2f}x" if sj_best else "-",
                         f"{r['peak_mib'] / sj_mem:.2f}x" if sj_mem else "-"])
        for config in (c for c in OURS if "compiled" in c and c in res):
            # each compiled configuration against the same network run eagerly
            comp = res[config]
            eager = res.get(config.replace("compiled", "eager").replace(", fallback_random", ""))
            if not eager:
                continue
            cpu = (f"; CPU time {comp['cpu_ms']:.1f} against {eager['cpu_ms']:.1f} ms, "
                   f"{eager['cpu_ms'] / comp['cpu_ms']:.2f}x" if threads == 1 and "cpu_ms" in comp else "")
            checks.append(f"{network}, {threads} thread(s), {alloc}: {config} "
                          f"{'faster' if comp['ms'] < eager['ms'] else 'NOT faster'} than eager "
                          f"({comp['ms']:.1f} against {eager['ms']:.1f} ms, {eager['ms'] / comp['ms']:.2f}x{cpu})")
        if sj_best:
            met = []
            for config in (c for c in OURS if c in res):
                r = res[config]
                speed, mem = sj_best / r["ms"], r["peak_mib"] / sj_mem
                share = r["categories"]["neurons"] / max(sum(r["categories"].values()), 1e-9)
                if speed >= 1.5 and mem <= 0.5:
                    met.append(config)
                cpu = (f" (CPU time: {sj_cpu['cpu_ms'] / r['cpu_ms']:.2f}x)"
                       if threads == 1 and "cpu_ms" in r and sj_cpu and "cpu_ms" in sj_cpu else "")
                checks.append(f"{network}, {threads} thread(s), {alloc}: {config} {speed:.2f}x as fast as "
                              f"SpikingJelly's best{cpu}, {mem:.2f}x its least peak memory; with neurons that took "
                              f"no time at all {sj_best / (r['ms'] * (1 - share)):.2f}x (neurons "
                              f"{100 * share:.0f}% of the step)")
            checks.append(f"{network}, {threads} thread(s), {alloc}: target (>= 1.5x as fast as SpikingJelly's "
                          f"best, <= 0.5x its peak memory) " + (f"met by {', '.join(met)}" if met else "NOT met"))
    table("One training step (forward, loss, backward, Adam): median ms over the repeats (min-max); "
          "compile: the first compiled step; peak: tensor memory of one step above what it starts with",
          header, body)
    header = ["network", "threads", "allocator", "configuration", "profiled ms", *CATEGORIES]
    body = []
    for network, threads, alloc, out in runs:
        for config, r in out["results"].items():
            total = sum(r["categories"].values())
            body.append([network, str(threads), alloc, config, f"{r['profiled_ms']:.0f}",
                         *(f"{100 * r['categories'][c] / total:.0f}%" for c in CATEGORIES)])
    table("Where a step's time goes: share of a profiled step (median over the profiled steps per "
          "category; the profiler's own cost adds to framework). Compiled configurations: Inductor "
          "fuses the neurons of SpikingJelly's CPU path and of the plain loop into its kernels, "
          "which count under the first category their names match (batch norm, pooling, "
          "elementwise/other); snnfunc's neurons stay one operator each", header, body)
    print()
    for line in checks:
        print("  " + line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    ap.add_argument("--configs", nargs="+", default=None, choices=CONFIGS, help="a subset of the configurations")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch threads, each in its own process (default: 1 and 2, SEW-ResNet-18 1 only; "
                         "--quick, --diagnose: 1)")
    ap.add_argument("--allocators", nargs="+", default=None, choices=["glibc", "jemalloc"],
                    help="each in its own process (glibc: its default settings); default jemalloc "
                         "(--diagnose: glibc jemalloc)")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per configuration (default 7; --quick: 3)")
    ap.add_argument("--profile-steps", type=int, default=None,
                    help="profiled steps per configuration, median per category (default 3; --quick: 1)")
    ap.add_argument("--chunk", type=int, default=25, help="steps per compiled chunk of the ALIF network's time loops")
    ap.add_argument("--quick", action="store_true", help="3 repeats, 1 profiled step, 1 thread")
    ap.add_argument("--diagnose", action="store_true", help="compiled against eager on the conv PLIF network")
    ap.add_argument("--low-memory", action="store_true",
                    help="with --diagnose: the network built with low_memory=True")
    ap.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                    help="with --diagnose: a subset of the variants")
    ap.add_argument("--save", help="also write the raw results to this JSON file")
    ap.add_argument("--report", metavar="JSON", nargs="+",
                    help="print the tables of earlier runs' --save files (one or more, in order) "
                         "instead of measuring")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--network", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    explicit_threads = args.threads is not None
    args.threads = args.threads or ([1] if args.quick or args.diagnose else [1, 2])
    args.allocators = args.allocators or (["glibc", "jemalloc"] if args.diagnose else ["jemalloc"])
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.profile_steps = args.profile_steps or (1 if args.quick else 3)
    if args.report:
        runs = [run for f in args.report for run in json.loads(Path(f).read_text())]
        return (diagnose_report if args.diagnose else report)(runs)
    if args.child:
        args.threads = args.threads[0]
        out = diagnose_child(args) if args.diagnose else child(args)
        Path(args.json).write_text(json.dumps(out))
        return
    if "jemalloc" in args.allocators and not os.path.exists(JEMALLOC):
        sys.exit(f"{JEMALLOC} not found (Debian: apt-get install libjemalloc2)")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu}, {torch.backends.cpu.get_cpu_capability()}); "
          f"load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    start = time.perf_counter()
    if args.diagnose:
        return diagnose(args)  # glibc and jemalloc unless --allocators says otherwise
    runs = []
    common = ["--repeats", str(args.repeats), "--chunk", str(args.chunk),
              "--profile-steps", str(args.profile_steps)]
    if args.configs:
        common += ["--configs", *args.configs]
    for network in args.networks:
        for threads in (args.threads if args.quick or explicit_threads else DEFAULT_THREADS[network]):
            # one Inductor cache per network and thread count, empty at first: the first
            # allocator's compile times are cold, the next ones find the graphs compiled
            with tempfile.TemporaryDirectory() as cache:
                for i, alloc in enumerate(args.allocators):
                    print(f"== {network}, {threads} thread(s), {alloc}", flush=True)
                    res = run_child(["--network", network, "--threads", str(threads), *common], alloc, cache)
                    if res is None:
                        print(f"   {network} failed", flush=True)
                        continue
                    res["cold_cache"] = i == 0
                    runs.append((network, threads, alloc, res))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}; {time.perf_counter() - start:.0f} s in all")
    if args.save:
        Path(args.save).write_text(json.dumps(runs, indent=1))
    report(runs)


# --------------------------------------------------------------------------- compiled vs eager


def aten_max_pool2d():
    """MaxPool2d(2) as a custom operator around ATen's kernels (forward and backward): opaque to
    Inductor, which then calls ATen's max-pool instead of generating its own."""
    lib = "bench_networks"
    if not hasattr(torch.ops, lib) or not hasattr(getattr(torch.ops, lib), "max_pool2d"):
        @torch.library.custom_op(f"{lib}::max_pool2d", mutates_args=())
        def max_pool2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, idx = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
            return out, idx

        @max_pool2d.register_fake
        def _(x):
            shape = (*x.shape[:-2], x.shape[-2] // 2, x.shape[-1] // 2)
            return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)

        @torch.library.custom_op(f"{lib}::max_pool2d_backward", mutates_args=())
        def max_pool2d_backward(g: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return torch.ops.aten.max_pool2d_with_indices_backward(g, x, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                  False, idx)

        @max_pool2d_backward.register_fake
        def _(g, x, idx):
            return torch.empty_like(x)

        def setup(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], output[1])

        def backward(ctx, g, _):
            x, idx = ctx.saved_tensors
            return torch.ops.bench_networks.max_pool2d_backward(g.contiguous(), x, idx)

        max_pool2d.register_autograd(backward, setup_context=setup)

    class ATenMaxPool(nn.Module):
        def forward(self, x):
            return torch.ops.bench_networks.max_pool2d(x)[0]

    return ATenMaxPool()


# name: (compiled, inductor options, compile mode, max-pool through ATen, channels-last)
VARIANTS = {
    "eager": (False, {}, None, False, False),
    "eager, channels-last": (False, {}, None, False, True),
    "compiled (default)": (True, {}, None, False, False),
    "layout_optimization=False": (True, {"layout_optimization": False}, None, False, False),
    "fallback_random=True": (True, {"fallback_random": True}, None, False, False),
    "layout_optimization=False, fallback_random=True":
        (True, {"layout_optimization": False, "fallback_random": True}, None, False, False),
    "layout_optimization=False, max-pool through ATen":
        (True, {"layout_optimization": False}, None, True, False),
    "channels-last": (True, {}, None, False, True),
    "channels-last, fallback_random=True": (True, {"fallback_random": True}, None, False, True),
    "max-pool through ATen (a custom op)": (True, {}, None, True, False),
    "cpp.simdlen=128": (True, {"cpp.simdlen": 128}, None, False, False),
    "freezing=True": (True, {"freezing": True}, None, False, False),
    "mode='max-autotune-no-cudagraphs'": (True, {}, "max-autotune-no-cudagraphs", False, False),
}


def top_ops(prof, n=14):
    """The operators and Inductor kernels with the most self time: [(name, calls, ms)]."""
    agg = {}
    for e in prof.events():
        if e.name == "[memory]":
            continue
        name = e.name.replace("graph_0_cpp_fused_", "cpp_fused_")
        calls, ms = agg.get(name, (0, 0.0))
        agg[name] = (calls + 1, ms + e.self_cpu_time_total / 1e3)
    return sorted(((k, c, ms) for k, (c, ms) in agg.items()), key=lambda r: -r[2])[:n]


def diagnose_child(args) -> dict:
    torch.set_num_threads(args.threads)
    torch._inductor.config.cpp.enable_kernel_profile = True
    warm_inductor()
    nets, x, y, loss = build("conv-plif", args.chunk)
    config = "snnfunc eager, low memory" if args.low_memory else "snnfunc eager"
    base = nets[config]
    steps, res = {}, {}
    names = [n for n in VARIANTS if args.variants is None or n in args.variants]
    for name in names:
        is_compiled, options, mode, pool, channels_last = VARIANTS[name]
        net, images = copy.deepcopy(base), x
        if pool:
            swap(net, nn.MaxPool2d, lambda _: aten_max_pool2d())
        if channels_last:  # the neurons keep the layout they are given (no wrapper needed)
            net = net.to(memory_format=torch.channels_last)
            images = x.contiguous(memory_format=torch.channels_last)
        step = Step(config, net, "conv-plif", images, loss)
        if is_compiled:
            step.model = torch.compile(net, mode=mode, options=options or None)
        torch.manual_seed(1)
        t0 = time.perf_counter()
        first_loss = step()
        first = time.perf_counter() - t0
        step()
        steps[name] = step
        res[name] = {"first_s": first, "first_loss": float(first_loss)}
        print(f"    {name}: first step {first:.1f} s, loss {float(first_loss):.6f}", flush=True)
    cpu = {}
    times = time_rounds(steps, args.repeats, cpu)
    from torch.profiler import ProfilerActivity, profile

    for name, step in steps.items():
        t, c = times[name], cpu[name]
        wall, cats, peak = profile_steps(step, not VARIANTS[name][0], args.profile_steps)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        res[name].update(ms=1e3 * statistics.median(t), ms_min=1e3 * min(t), ms_max=1e3 * max(t),
                         cpu_ms=1e3 * statistics.median(c), cpu_ms_min=1e3 * min(c),
                         cpu_ms_max=1e3 * max(c),
                         profiled_ms=wall, categories=cats, peak_mib=peak / 2**20, top=top_ops(prof))
    return {"allocator": allocator_name(), "threads": torch.get_num_threads(),
            "load_start": None, "results": res}


def cpu_cells(r, threads, base):
    """The CPU-time cells of a result: median (min-max), and the ratio to `base` (a result);
    '-' at several threads (the other threads' time is not counted) or where not measured."""
    if threads != 1 or "cpu_ms" not in r:
        return ["-", "-"]
    ratio = f"{r['cpu_ms'] / base['cpu_ms']:.2f}x" if base and "cpu_ms" in base else "-"
    return [f"{r['cpu_ms']:.1f} ({r['cpu_ms_min']:.1f}-{r['cpu_ms_max']:.1f})", ratio]


def diagnose(args):
    runs = []
    with tempfile.TemporaryDirectory() as cache:  # shared: the second allocator finds the graphs compiled
        for threads in args.threads:
            for alloc in args.allocators:
                print(f"== conv-plif, compile variants, {threads} thread(s), {alloc}", flush=True)
                with tempfile.NamedTemporaryFile(suffix=".json") as f:
                    cmd = [sys.executable, __file__, "--child", "--diagnose", "--json", f.name,
                           "--threads", str(threads), "--repeats", str(args.repeats), "--chunk", str(args.chunk),
                           "--profile-steps", str(args.profile_steps)]
                    if args.variants:
                        cmd += ["--variants", *args.variants]
                    if args.low_memory:
                        cmd.append("--low-memory")
                    if subprocess.run(cmd, env=env_for(alloc, cache)).returncode:
                        print("   failed", flush=True)
                        continue
                    runs.append((threads, alloc, json.loads(Path(f.name).read_text())))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    if args.save:
        Path(args.save).write_text(json.dumps(runs, indent=1))
    diagnose_report(runs)


def diagnose_report(runs):
    """runs: [(threads, allocator, child result)]."""
    header = ["threads", "allocator", "variant", "step ms, median (min-max)", "/ eager",
              "CPU ms, median (min-max)", "/ eager (CPU)", "compile s", "peak MiB", *CATEGORIES]
    body = []
    for threads, alloc, out in runs:
        res = out["results"]
        eager = res.get("eager", {"ms": float("nan"), "cpu_ms": float("nan")})
        for name, r in res.items():
            body.append([str(threads), alloc, name, f"{r['ms']:.1f} ({r['ms_min']:.1f}-{r['ms_max']:.1f})",
                         f"{r['ms'] / eager['ms']:.2f}x", *cpu_cells(r, threads, eager),
                         f"{r['first_s']:.1f}" if VARIANTS[name][0] else "-",
                         f"{r['peak_mib']:.1f}",
                         *(f"{r['categories'][c]:.1f}" for c in CATEGORIES)])
    table("conv PLIF network, snnfunc: eager against torch.compile variants; step median ms "
          "(min-max) of wall time and of this thread's CPU time (1 thread only: the time the "
          "step ran, not the time a shared machine's other processes held the core), each "
          "relative to eager, compile s (first step), peak MiB, and ms per category in one "
          "profiled step (median of the profiled steps)", header, body)
    for threads, alloc, out in runs:
        for name in ("eager", "compiled (default)"):
            r = out["results"].get(name)
            if r:
                table(f"Top operators and kernels by self time, {name}, {threads} thread(s), {alloc} "
                      "(one profiled step)", ["operator / kernel", "calls", "self ms"],
                      [[k[:110], str(c), f"{ms:.1f}"] for k, c, ms in r["top"]])


if __name__ == "__main__":
    main()
