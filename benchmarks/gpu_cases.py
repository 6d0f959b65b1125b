"""The CUDA kernels against the reference loop on a GPU, beyond pytest's CUDA tests: the cases
that tests/triton_interpreter_cases.py and tests/triton_generated_cases.py run under Triton's
interpreter, on CUDA tensors, plus the fused op under torch.compile, bit for bit. Part of
benchmarks/gpu_check.sh:

    python benchmarks/gpu_cases.py --device cuda --workers 12 --md part.md
    TRITON_INTERPRET=1 python benchmarks/gpu_cases.py --device cpu --every 25 --workers 2

Suites (each case a fresh input; spikes, h and states compared by bit pattern, gradients to
rounding, as the two case scripts say):
- builtin: every classic neuron (if, lif, plif, rif), option, reset, detach_reset,
  float32/float64, every surrogate (built-in and user-defined), T in {1, 7, 33}, N in
  {1, 5, 300}, edge values (±0, ±inf, NaN), losses that leave outputs unused; four such cases
  for every other neuron of the test registry (tests/registry.py);
- generated: every neuron of the test registry (classic, built-in definitions, user neurons),
  option, reset, detach_reset, and float32, float64, float16, bfloat16, edge values, state
  traces;
- ir-ops: every operation of the kernels' IR at its boundary values (float32, float64);
- compiled: `torch.compile(fullgraph=True)` of the fused call against the eager reference, in
  float32 and bfloat16: under Inductor the Triton kernels are compiled by Inductor's own
  launcher, which must keep `enable_fp_fusion=False` for the bit-exactness promise.

The case scripts build their inputs on the CPU with seeded generators; here every tensor
they create is moved to the device (`_OnDevice` stands in for their module `torch`), so the
same cases run on CUDA tensors through the public functions. Cases are spread over worker
processes (kernels compile on the CPU, one process per core); each prints one line per case,
and what finished before the deadline is reported.

With `--device cpu` (the dry run) the Triton kernels run under the interpreter
(TRITON_INTERPRET=1, CPU tensors routed to the Triton ops as the case scripts do), except the
compiled suite, which Inductor cannot build for Triton on CPU tensors: it runs there on the C
kernels, to rehearse the code.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


COMPILE_BACKEND = "inductor"  # the dry run passes aot_eager (Inductor's C++ builds are slow there)


class _OnDevice:
    """Stands in for the module `torch` inside a case script: tensor factories run as written
    (on the CPU, with the script's seeded CPU generators), then move to the device."""

    FACTORIES = frozenset({"rand", "randn", "randint", "tensor", "full", "zeros", "ones",
                           "linspace", "arange", "empty"})

    def __init__(self, torch_module, device):
        self._torch, self._device = torch_module, device

    def __getattr__(self, name):
        attr = getattr(self._torch, name)
        if name in self.FACTORIES:
            device = self._device
            return lambda *a, **k: attr(*a, **k).to(device)
        return attr


def _case_lists(every, max_compiled=None):
    """(suite, index, case) for every case, interleaved across suites; every `every`-th."""
    sys.path.insert(0, str(TESTS))
    import torch
    import triton_generated_cases as gen
    import triton_interpreter_cases as builtin

    suites = {
        "builtin": list(builtin.cases(False)),
        "generated": list(gen.cases(False)),
        "ir-ops": [torch.float64, torch.float32],
        "compiled": [(name, dtype) for dtype, names in
                     ((torch.float32, ("plif", "lif")), (torch.bfloat16, ("lif", "plif")),
                      (torch.float32, ("cuba_lif", "alif")), (torch.bfloat16, ("alif", "cuba_lif")))
                     for name in names][:max_compiled],
    }
    out = []
    for name, cases in suites.items():
        keep = cases if name in ("ir-ops", "compiled") else cases[::every]
        out.append([(name, i, c) for i, c in enumerate(keep)])
    # compiled cases first (each compile is long), then the rest interleaved
    order = out[3] + [c for group in itertools.zip_longest(*out[:3]) for c in group if c]
    return order, {name: len(group) for name, group in zip(suites, out)}


def _compiled_case(case, device):
    """torch.compile of the fused call == the eager reference, bit for bit where the
    definition is exact; gradients to rounding."""
    import torch
    from registry import ENTRIES, leaves
    from test_edge_values import bits

    name, dtype = case
    neuron, params, exact = ENTRIES[name].neuron, ENTRIES[name].params, ENTRIES[name].exact
    g = torch.Generator().manual_seed(7)
    shape = (4, 96)
    x = (2.5 * torch.rand(16, *shape, generator=g, dtype=torch.float64)).to(dtype).to(device)
    params = dict(params)
    first = next(iter(params), None)
    if first is not None:
        params[first] = (params[first] * (1 + 0.2 * torch.rand(shape, generator=g, dtype=torch.float64))
                         ).to(dtype).to(device)
    th = (0.8 + 0.4 * torch.rand(shape[-1:], generator=g, dtype=torch.float64)).to(dtype).to(device)
    inputs = [x, th] + ([params[first]] if first is not None else [])
    for t in inputs:
        t.requires_grad_(True)

    def run(x, th, p, impl):
        kw = dict(params)
        if first is not None:
            kw[first] = p
        out = neuron(x, v_threshold=th, return_h=True, impl=impl, **kw)
        return (out.spikes, out.h, *leaves(out[1]))

    torch._dynamo.reset()
    compiled = torch.compile(lambda x, th, p: run(x, th, p, "fused"), fullgraph=True,
                             backend=COMPILE_BACKEND)
    p = params[first] if first is not None else None
    got = compiled(x, th, p)
    want = run(x, th, p, "reference")
    for k, (a, b) in enumerate(zip(got, want)):
        if exact and not torch.equal(bits(a), bits(b)):
            n = int((bits(a) != bits(b)).sum())
            return f"output {k} ({('spikes', 'h')[k] if k < 2 else 'state'}) differs in {n} elements"
        if not exact:
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)
    w = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype).to(device) for t in want]
    ga = torch.autograd.grad(sum((a * c).sum() for a, c in zip(got, w)), inputs, allow_unused=True)
    gb = torch.autograd.grad(sum((b * c).sum() for b, c in zip(want, w)), inputs, allow_unused=True)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    for t, a, b in zip(inputs, ga, gb):
        a = torch.zeros_like(t) if a is None else a
        b = torch.zeros_like(t) if b is None else b
        try:
            torch.testing.assert_close(a.double(), b.double(), **tol)
        except AssertionError as exc:
            return f"gradient: {str(exc).splitlines()[2:4]}"
    return None


def worker(k, workers, every, device, max_compiled):
    """Runs cases k, k + workers, ...; one line per case."""
    import warnings

    import numpy as np
    import torch

    sys.path.insert(0, str(TESTS))
    import ir_op_table
    import test_edge_values
    import triton_generated_cases as gen
    import triton_interpreter_cases as builtin
    from snnfunc._kernel import backends

    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    for module in (gen, builtin, ir_op_table, test_edge_values):
        module.torch = _OnDevice(torch, device)
    interpreted = device == "cpu"
    if interpreted and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("--device cpu runs the Triton kernels under the interpreter: set TRITON_INTERPRET=1")
    c_backend, triton_backend = backends.BACKENDS.get("cpu"), backends.BACKENDS["cuda"]
    cases, _ = _case_lists(every, max_compiled)
    for suite, i, case in cases[k::workers]:
        if interpreted:  # CPU tensors to the Triton ops, except for Inductor (see the docstring)
            backends.BACKENDS["cpu"] = c_backend if suite == "compiled" else triton_backend
        start = time.perf_counter()
        try:
            if suite == "builtin":
                err = builtin.one_case(*case)
            elif suite == "generated":
                err = gen.one_case(*case)
            elif suite == "ir-ops":
                from test_ir_ops import compare

                bad = compare(ir_op_table.run(case, "fused"), ir_op_table.run(case, "reference"), case)
                err = "; ".join(bad[:4]) or None
            else:
                err = _compiled_case(case, device)
        except Exception as exc:  # noqa: BLE001  (report every case)
            err = f"{type(exc).__name__}: {str(exc)[:300]}"
            if suite == "compiled":
                traceback.print_exc(file=sys.stderr)
        took = time.perf_counter() - start
        desc, err = (" ".join(str(t or "").split()) for t in (_describe(suite, case), err))
        print(f"{'FAIL' if err else 'PASS'}\t{suite}\t{i}\t{took:.1f}\t{desc}\t{err}", flush=True)
    print("DONE", flush=True)


def _describe(suite, case):
    if suite == "builtin":
        kind, kw, dtype, T, N, sg, pshape, use, edge, _ = case
        return f"{kind} {kw} {str(dtype)[6:]} T={T} N={N} {type(sg).__name__} p={pshape} use={'+'.join(use)}{' edge' if edge else ''}"
    if suite == "generated":
        name, opts, kw, dtype, T, N, sg, use, edge, _ = case
        return f"{name} {opts} {kw} {str(dtype)[6:]} T={T} N={N} {type(sg).__name__} use={'+'.join(use)}{' edge' if edge else ''}"
    if suite == "ir-ops":
        return f"every IR operation {str(case)[6:]}"
    return f"torch.compile {case[0]} {str(case[1])[6:]}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--every", type=int, default=1, help="run every k-th case of the two case scripts")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("PART_DEADLINE") or 0), help="epoch seconds: stop the workers then")
    ap.add_argument("--md", type=Path, default=os.environ.get("PART_MD") or None,
                    help="markdown section to write (default: $PART_MD, else stdout)")
    ap.add_argument("--max-compiled", type=int, default=None, help="at most this many compiled cases")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile's backend")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global COMPILE_BACKEND
    COMPILE_BACKEND = args.compile_backend
    if args.worker is not None:
        return worker(args.worker, args.workers, args.every, args.device, args.max_compiled)

    md = args.md.open("w") if args.md else sys.stdout
    _, totals = _case_lists(args.every, args.max_compiled)
    n_cases = sum(totals.values())
    workers = min(args.workers, n_cases)
    md.write(f"{n_cases} cases ({', '.join(f'{k} {v}' for k, v in totals.items())}) on "
             f"{args.device}, {workers} worker processes"
             f"{'' if args.every == 1 else f', every {args.every}-th case of the case scripts'}"
             f"{', Triton interpreter (dry run)' if args.device == 'cpu' else ''}"
             f"{'' if args.compile_backend == 'inductor' else f', torch.compile backend {args.compile_backend}'}.\n\n")
    md.flush()
    logs = [Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_cases.{os.getpid()}.{k}.log" for k in range(workers)]
    procs = []
    for k in range(workers):
        cmd = [sys.executable, __file__, "--worker", str(k), "--workers", str(workers),
               "--every", str(args.every), "--device", args.device,
               "--compile-backend", args.compile_backend]
        if args.max_compiled is not None:
            cmd += ["--max-compiled", str(args.max_compiled)]
        procs.append(subprocess.Popen(cmd, stdout=logs[k].open("w"), stderr=subprocess.STDOUT))
    start = time.time()
    stopped = False
    try:
        while any(p.poll() is None for p in procs):
            if args.deadline and time.time() > args.deadline:
                stopped = True
                break
            time.sleep(1)
    except KeyboardInterrupt:
        stopped = True
    killed = set()
    for k, p in enumerate(procs):
        if p.poll() is None:
            p.kill()
            p.wait()
            killed.add(k)
    results, errors, tails = [], [], []
    for k, log in enumerate(logs):
        text = log.read_text(errors="replace")
        done = False
        for line in text.splitlines():
            parts = line.split("\t")
            if parts[0] in ("PASS", "FAIL") and len(parts) == 6:
                results.append(parts)
            elif line == "DONE":
                done = True
        if not done:
            errors.append(f"worker {k}: {'stopped at the deadline' if k in killed else f'exit status {procs[k].returncode}'}")
            tails.append(f"--- worker {k}, last lines ---\n" + "\n".join(text.splitlines()[-15:]))
        sys.stdout.write(f"--- worker {k} log ---\n{text}")
    took = time.time() - start
    stopped = stopped and len(results) < n_cases
    md.write("| suite | cases | passed | failed | not run |\n|---|---|---|---|---|\n")
    for suite, total in totals.items():
        rs = [r for r in results if r[1] == suite]
        fails = sum(r[0] == "FAIL" for r in rs)
        md.write(f"| {suite} | {total} | {len(rs) - fails} | {fails} | {total - len(rs)} |\n")
    slow = sorted(results, key=lambda r: -float(r[3]))[:3]
    md.write(f"\n{len(results)} of {n_cases} cases run in {took:.0f} s"
             f"{' (stopped at the time budget)' if stopped else ''}"
             + ("; slowest: " + ", ".join(f"{r[4]} {float(r[3]):.1f} s" for r in slow) if slow else "")
             + ".\n")
    failures = [r for r in results if r[0] == "FAIL"]
    if failures:
        md.write(f"\nFailures ({len(failures)}; first 40):\n\n```\n")
        for r in failures[:40]:
            md.write(f"{r[1]} {r[4]}: {r[5]}\n")
        md.write("```\n")
    if errors:
        md.write("\nWorkers that did not finish: " + "; ".join(errors) + "\n\n```\n"
                 + "\n".join(tails)[-4000:] + "\n```\n")
    md.flush()
    for log in logs:
        log.unlink(missing_ok=True)
    if failures or any(not e.endswith("deadline") for e in errors):
        return 1
    return 3 if len(results) < n_cases else 0


if __name__ == "__main__":
    sys.exit(main())
