"""Peak memory and time of one training step (forward + backward) of the convolutional PLIF
network of examples/train_fashion_mnist.py (Fang et al. 2021), by T, side by side:

- snnfunc plain: the network over the whole sequence;
- snnfunc packed: the same under `snnfunc.memory.packed_spikes()`;
- snnfunc packed + checkpointed: `memory.checkpointed` over chunks of `--chunk` steps, packed;
- snnfunc truncated: `memory.truncated_bptt` over the same chunks (a backward per chunk);
- SpikingJelly 2.0: the same network with its `ParametricLIFNode` (step_mode "m", torch
  backend, the CPU's), where installed.

Every configuration runs in a fresh process. Peak memory is the peak of the bytes of tensors
allocated during one training step and alive at once (from the profiler's memory events: what
the step adds to the parameters and the input, whatever the allocator keeps cached); time is
the median of `--repeats` further steps without the profiler. Batch norm runs with fixed statistics (eval
mode), so that every configuration computes the same function chunk by chunk; dropout is on.

    python benchmarks/bench_memory.py                     # T = 8, 32, 128
    python benchmarks/bench_memory.py --Ts 8 --repeats 2  # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

CONFIGS = ["snnfunc plain", "snnfunc packed", "snnfunc packed + checkpointed",
           "snnfunc truncated", "SpikingJelly 2.0"]


def peak_bytes(step) -> int:
    """The peak of the tensor bytes that `step()` allocates and holds at once."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


class Layers(nn.Module):
    """The network's layers and PLIF parameters (k = sigmoid(w), tau starting at 2)."""

    def __init__(self, channels, fc, classes=10, votes=10):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.fc1 = nn.Linear(channels * 7 * 7, fc, bias=False)
        self.fc2 = nn.Linear(fc, classes * votes, bias=False)
        self.w = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in range(4)])
        self.drop = nn.Dropout(0.5)
        self.classes, self.votes = classes, votes


def snnfunc_chunk(net: Layers):
    import snnfunc
    from snnfunc.surrogate import ATan

    def plif(x, v, w):
        out = snnfunc.plif(x, v, w=w, parametrization="sigmoid", surrogate=ATan(), detach_reset=True)
        return out.spikes, out.v

    def td(layer, x):
        return layer(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def fn(x, state):
        state = state or (None,) * 4
        s, v1 = plif(x, state[0], net.w[0])
        s = td(lambda t: nn.functional.max_pool2d(t, 2), s)
        s, v2 = plif(td(net.conv, s), state[1], net.w[1])
        s = td(lambda t: nn.functional.max_pool2d(t, 2).flatten(1), s)
        s, v3 = plif(net.fc1(net.drop(s)), state[2], net.w[2])
        s, v4 = plif(net.fc2(net.drop(s)), state[3], net.w[3])
        return s, (v1, v2, v3, v4)

    return fn


def spikingjelly_net(net: Layers):
    from spikingjelly.activation_based import layer, neuron, surrogate

    def plif():
        return neuron.ParametricLIFNode(init_tau=2.0, surrogate_function=surrogate.ATan(),
                                        detach_reset=True, step_mode="m")

    return nn.Sequential(
        plif(), layer.SeqToANNContainer(nn.MaxPool2d(2)),
        layer.SeqToANNContainer(net.conv), plif(),
        layer.SeqToANNContainer(nn.MaxPool2d(2), nn.Flatten()),
        nn.Dropout(0.5), nn.Linear(net.fc1.in_features, net.fc1.out_features, bias=False), plif(),
        nn.Dropout(0.5), nn.Linear(net.fc2.in_features, net.fc2.out_features, bias=False), plif())


def run_one(config, T, batch, channels, fc, chunk, repeats):
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    net = Layers(channels, fc)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # fixed statistics: the same function over any chunking
    images = torch.rand(batch, 1, 28, 28)
    target = nn.functional.one_hot(torch.randint(0, 10, (batch,)), 10).float()

    def rate_loss(spikes, steps):
        rate = spikes.unflatten(-1, (10, 10)).sum((0, 3)) / (steps * 10)
        return nn.functional.mse_loss(rate, target)

    if config == "SpikingJelly 2.0":
        from spikingjelly.activation_based import functional as sjf

        sj = spikingjelly_net(net)

        def step():
            sjf.reset_net(sj)
            x = net.encoder(images)
            spikes = sj(x.unsqueeze(0).expand(T, *x.shape))
            rate_loss(spikes, T).backward()
    else:
        from snnfunc import memory

        fn = snnfunc_chunk(net)

        def step():
            x = net.encoder(images)  # static: once per image, the same input at every step

            def over_time(steps, state):  # steps: a [t] slice of the time axis
                return fn(x.unsqueeze(0).expand(steps.shape[0], *x.shape), state)

            steps = torch.arange(T)
            if config == "snnfunc plain":
                rate_loss(over_time(steps, None)[0], T).backward()
            elif config == "snnfunc packed":
                with memory.packed_spikes():
                    loss = rate_loss(over_time(steps, None)[0], T)
                loss.backward()
            elif config == "snnfunc packed + checkpointed":
                with memory.packed_spikes():
                    loss = rate_loss(memory.checkpointed(over_time, steps, None, chunk=chunk)[0], T)
                loss.backward()
            else:  # truncated: a loss and a backward per chunk (the encoder's graph kept)
                for spikes in memory.truncated_bptt(over_time, steps, None, chunk=chunk):
                    rate_loss(spikes, spikes.shape[0]).backward(retain_graph=True)

    step()  # warm-up (kernel loading, first-call allocations)
    net.zero_grad(set_to_none=True)
    peak = peak_bytes(step)
    times = []
    for _ in range(repeats):
        net.zero_grad(set_to_none=True)
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return dict(peak_mib=peak / 2**20, ms=statistics.median(times) * 1e3,
                ms_min=min(times) * 1e3, ms_max=max(times) * 1e3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--Ts", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--fc", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=8, help="time steps per chunk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = ap.parse_args(argv)
    if args.one:
        config, T = json.loads(args.one)
        print(json.dumps(run_one(config, T, args.batch, args.channels, args.fc, args.chunk, args.repeats)))
        return
    try:
        import spikingjelly  # noqa: F401
        configs = CONFIGS
    except ImportError:
        configs = CONFIGS[:-1]
    print(f"conv PLIF network ({args.channels} channels, fc {args.fc}), batch {args.batch}, "
          f"chunks of {args.chunk} steps, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"peak memory of a training step (MiB) / time per step (median ms, min-max over {args.repeats})\n")
    results = {}
    for T in args.Ts:
        for config in configs:
            cmd = [sys.executable, __file__, "--one", json.dumps([config, T]), "--batch", str(args.batch),
                   "--channels", str(args.channels), "--fc", str(args.fc), "--chunk", str(args.chunk),
                   "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                results[config, T] = None
                print(f"{config} T={T} failed: {proc.stderr[-500:]}", file=sys.stderr)
            else:
                results[config, T] = json.loads(proc.stdout.strip().splitlines()[-1])
    head = "| method | " + " | ".join(f"T={T}" for T in args.Ts) + " |"
    print(head)
    print("|" + "---|" * (len(args.Ts) + 1))
    sj = {T: results.get(("SpikingJelly 2.0", T)) for T in args.Ts}
    for config in configs:
        cells = []
        for T in args.Ts:
            r = results[config, T]
            if r is None:
                cells.append("failed")
                continue
            cell = f"{r['peak_mib']:.0f} MiB, {r['ms']:.0f} ms ({r['ms_min']:.0f}-{r['ms_max']:.0f})"
            if sj[T] and config != "SpikingJelly 2.0":
                cell += f"; {sj[T]['peak_mib'] / max(r['peak_mib'], 1e-9):.1f}x less memory, {r['ms'] / sj[T]['ms']:.2f}x time"
            cells.append(cell)
        print(f"| {config} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
