"""Fused kernels generated from neuron definitions (`snnfunc.definition`), on the CPU.

Two `torch.library` custom ops, `snnfunc::defined_forward` and `snnfunc::defined_backward`,
take any registered definition by name: states and parameters are lists of tensors, so a
neuron with any number of them fits one schema. Each configuration (definition, options,
reset, dtype, which gradients are wanted) gets its C source from `_codegen`, compiled once
per machine and cached by the source's hash, like the hand-written kernel. The ops check
every argument first, have fake kernels (one node to `torch.compile`, whatever T is) and
vmap rules; one autograd.Function ties them together under `torch.func`.

Half precision (float16, bfloat16) is loaded and stored in its own dtype and computed in
float32, states held in float32 between steps; the reference loop follows the same rule.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import os
from typing import Optional

import torch
from torch import Tensor

from snnfunc._core import ir as _ir
from snnfunc._fused import _codegen, _cpu, _ops

KERNELS_IN_MEMORY = 1024  # built kernels a process keeps at hand (least recently used go)
COMPUTE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
          torch.bfloat16: "bfloat16"}


# --------------------------------------------------------------------------- building

_build = _cpu.build


@functools.lru_cache(maxsize=None)
def _job_type(k: int, m: int):
    P, I = ctypes.c_void_p, ctypes.c_int64
    m = max(m, 1)

    class Job(ctypes.Structure):
        _fields_ = [("T", I), ("N", I), ("block", I), ("sc", P), ("x", P),
                    ("th", P), ("gs", P), ("gh", P), ("sg", P), ("st", P * k), ("par", P * m),
                    ("gst", P * k), ("tr", P * k), ("gtr", P * k), ("sst", I * k), ("spar", I * m), ("sth", I), ("s", P),
                    ("h", P), ("gx", P), ("gth", P), ("st_out", P * k), ("gst0", P * k),
                    ("gpar", P * m)]

    return Job


def _ptr(t):
    return None if t is None or t.numel() == 0 else t.data_ptr()


def _stride(t):
    return 0 if t.numel() == 1 else 1


def _run(lib, neuron, job_fields: dict, backward: bool):
    K, M = len(neuron.states), len(neuron.parameters)
    job = _job_type(K, M)()
    for name, value in job_fields.items():
        if isinstance(value, list):
            arr = getattr(job, name)
            for i, v in enumerate(value):
                arr[i] = v
        else:
            setattr(job, name, value)
    rc = lib.snn_run(ctypes.addressof(job), int(backward), torch.get_num_threads())
    if rc:
        raise MemoryError("the generated neuron kernel could not allocate its buffer")


# --------------------------------------------------------------------------- naming


def options_string(opts: dict) -> str:
    return ",".join(f"{k}={int(v)}" for k, v in sorted(opts.items()))


def _parse_options(neuron, text: str) -> dict:
    opts = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        if k not in neuron.options or v not in ("0", "1"):
            raise ValueError(f"options must be name=0 or name=1 for {tuple(neuron.options)}, "
                             f"got {text!r}")
        opts[k] = v == "1"
    if set(opts) != set(neuron.options):
        raise ValueError(f"options must give {tuple(neuron.options)}, got {text!r}")
    return opts


# A surrogate travels to the backward op as a token, the JSON of
#   [class name, [[field, value], ...] (fixed in the kernel), [field, ...] (run-time), digest]:
# its numeric fields are run-time numbers (`scalars[1:]`, read by the kernel like a parameter),
# so every alpha shares one kernel; the digest of its traced derivative tells two classes of
# one name apart (a class defined again). The class comes from the registry of surrogate
# classes (`snnfunc.surrogate.registered`): nothing is imported or called from a token.

_SURROGATES: dict[str, object] = {}  # token -> an instance seen in this process


@dataclasses.dataclass(frozen=True)
class SurrogatePlan:
    """How the kernels take a surrogate: its token and its run-time numbers (float64), or
    `reason`, why its derivative cannot be compiled in (then computed in torch)."""

    token: str
    values: tuple
    reason: str | None


def surrogate_plan(surrogate) -> SurrogatePlan:
    try:
        return _cached_plan(surrogate)
    except TypeError:  # a surrogate that cannot be hashed
        return _plan(surrogate)


def surrogate_token(surrogate) -> str:
    """A string naming a surrogate (its class and fields), for the backward op's schema."""
    return surrogate_plan(surrogate).token


@functools.lru_cache(maxsize=256)
def _cached_plan(surrogate) -> SurrogatePlan:
    return _plan(surrogate)


_JSON_SCALARS = (bool, int, float, str, type(None))


def _plan(surrogate) -> SurrogatePlan:
    from snnfunc import surrogate as _sg

    cls = type(surrogate)
    name = _sg.name_of(cls)
    fields = [[f.name, getattr(surrogate, f.name)] for f in dataclasses.fields(surrogate)]
    numbers_ = [n for n, v in fields if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for runtime in (numbers_, []):  # run-time numbers where the derivative allows, else fixed
        fixed = [[n, v] for n, v in fields if n not in runtime]
        try:
            graph, _ = _trace_derivative(cls, dict(fixed), runtime)
        except Exception as exc:  # noqa: BLE001  (anything a user's derivative may raise)
            reason = (f"the surrogate {cls.__name__}'s derivative cannot be compiled into the "
                      f"kernel ({exc})")
            continue
        reason = None
        break
    else:
        fixed, runtime, graph = fields, [], None
    if not all(isinstance(v, _JSON_SCALARS) for _, v in fixed):
        reason = reason or (f"the surrogate {cls.__name__} has a field that is not a number, "
                            f"bool, string or None")
        fixed = [[n, repr(v)] for n, v in fixed]
    token = json.dumps([name, fixed, runtime, _digest(graph)])
    _SURROGATES.setdefault(token, surrogate)
    values = tuple(float(getattr(surrogate, n)) for n in runtime)
    return SurrogatePlan(token, values, reason)


def _digest(graph) -> str:
    if graph is None:
        return ""
    return hashlib.sha256(repr(graph.nodes).encode()).hexdigest()[:16]


def _trace_derivative(cls, fixed: dict, runtime: list):
    """The surrogate's derivative g'(u) traced into a graph, with its `runtime` fields as
    run-time numbers: `(graph, node of g'(u))`."""
    g = _ir.Graph(f"surrogate {cls.__name__}")
    u = g.add("input", "u")
    node = _derivative_node(cls, fixed, runtime, g, u)
    return g, node


def _derivative_node(cls, fixed, runtime, g, u):
    obj = object.__new__(cls)  # no __init__: fields are set, not validated (they were)
    for n, v in fixed.items():
        object.__setattr__(obj, n, v)
    for k, n in enumerate(runtime):
        object.__setattr__(obj, n, g.sym("input", f"{_ir.SCALAR_INPUT}{k}"))
    old, g.where = g.where, f"surrogate {cls.__name__}"
    try:
        d = obj.derivative(_ir.Sym(g, u))
        i = g.value(d, f"{cls.__name__}.derivative(x)")
        if g.kinds[i] != "real":
            raise _ir.DefinitionError("derivative(x) returned a mask")
        return i
    finally:
        g.where = old


def _decode(token: str):
    """`(class, fixed fields, run-time fields, digest)` of a token, checked; the class from
    the registry."""
    from snnfunc import surrogate as _sg

    try:
        name, fixed, runtime, digest = json.loads(token)
        fixed = {str(n): v for n, v in fixed}
        ok = (isinstance(name, str) and isinstance(digest, str)
              and all(isinstance(v, _JSON_SCALARS) for v in fixed.values())
              and all(isinstance(n, str) for n in runtime))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"surrogate must be a token made by snnfunc (a surrogate class's name "
                         f"and fields), got {token!r}")
    cls = _sg.registered(name)
    names = {f.name for f in dataclasses.fields(cls)}
    if set(fixed) | set(runtime) != names or set(fixed) & set(runtime):
        raise ValueError(f"surrogate {token!r} does not give the fields of {name}, "
                         f"{sorted(names)}")
    return cls, fixed, list(runtime), digest


def _surrogate(token: str):
    """The surrogate a token names: an instance seen in this process, or one made from its
    registered class and fields (a saved graph in a fresh process)."""
    if token not in _SURROGATES:
        cls, fixed, runtime, _ = _decode(token)
        if runtime:
            raise ValueError(f"surrogate {token!r} leaves {runtime} to run-time numbers")
        _SURROGATES[token] = cls(**fixed)
    return _SURROGATES[token]


def why_not_surrogate(surrogate) -> str | None:
    """Why the surrogate's derivative cannot be compiled into a kernel, or None."""
    return surrogate_plan(surrogate).reason


# --------------------------------------------------------------------------- checks


_MAX_SCALARS = 64


def _check(neuron_name, x, states, params, th, scalars, device_type="cpu"):
    from snnfunc._core.registry import lookup

    neuron = lookup(neuron_name)
    if not isinstance(x, Tensor) or x.dtype not in DTYPES:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a float16, bfloat16, float32 or float64 tensor, got {got}")
    if x.dim() < 1 or x.layout != torch.strided:
        raise ValueError(f"x must be a dense tensor [T, ...], got {x.dim()}-d ({x.layout})")
    if not _ops._device_ok(x, device_type):
        raise ValueError(f"this op runs on {device_type} tensors, x is on {x.device}")
    if len(states) != len(neuron.states):
        raise ValueError(f"states must hold {len(neuron.states)} tensors {neuron.states}, got "
                         f"{len(states)}")
    if len(params) != len(neuron.parameters):
        raise ValueError(f"params must hold {len(neuron.parameters)} tensors "
                         f"{tuple(neuron.parameters)}, got {len(params)}")
    compute = COMPUTE.get(x.dtype, x.dtype)  # states are held in it (float32 for half)
    for name, t in zip(neuron.states, states):
        _ops._check_step(name, t, x, dtype=compute)
    for name, t in [*zip(neuron.parameters, params), ("th", th)]:
        _ops._check_step(name, t, x)
    if (not isinstance(scalars, Tensor) or scalars.dtype != torch.float64
            or scalars.dim() != 1 or not 1 <= scalars.numel() <= _MAX_SCALARS
            or scalars.layout != torch.strided
            or not (scalars.device == x.device or device_type == "cpu"
                    and scalars.device.type == "cpu")):
        raise ValueError(f"scalars must be a 1-d float64 tensor on {x.device} of v_rest and the "
                         f"surrogate's run-time parameters (1 to {_MAX_SCALARS} values)")
    return neuron


def _io(x, states, params, th):
    c = lambda t: t.contiguous()  # noqa: E731
    return c(x), [c(t) for t in states], [c(t) for t in params], c(th)


# --------------------------------------------------------------------------- forward op


def _shared(params, th):
    """For each parameter and then the threshold: one value shared by every neuron."""
    return tuple(t.numel() == 1 for t in (*params, th))


@functools.lru_cache(maxsize=KERNELS_IN_MEMORY)
def _forward_lib(neuron, opts_text, hard, want_h, want_states, dtype, shared):
    src = _codegen.forward_source(neuron, _parse_options(neuron, opts_text), hard=hard,
                                  want_h=want_h, dtype=DTYPES[dtype], want_trace=want_states,
                                  shared=shared)
    return _build(src)


def _forward_impl(x: Tensor, states: list[Tensor], params: list[Tensor], th: Tensor,
                    scalars: Tensor, neuron: str, options: str, hard: bool, want_h: bool,
                    want_states: bool = False) -> list[Tensor]:
    nrn = _check(neuron, x, states, params, th, scalars)
    opts_text = options_string(_parse_options(nrn, options))
    x, states, params, th = _io(x, states, params, th)
    scalars = scalars.contiguous()
    s = x.new_empty(x.shape)
    h = x.new_empty(x.shape if want_h else (0,))
    compute = COMPUTE.get(x.dtype, x.dtype)
    out = [x.new_empty(x.shape[1:], dtype=compute) for _ in states]
    tr = [x.new_empty(x.shape if want_states else (0,), dtype=compute) for _ in states]
    lib = _forward_lib(nrn, opts_text, hard, want_h, want_states, x.dtype, _shared(params, th))
    _run(lib, nrn, dict(T=x.shape[0], N=x[0].numel() if x.shape[0] else out[0].numel(),
                        sc=scalars.data_ptr(), x=_ptr(x), th=_ptr(th),
                        st=[_ptr(t) for t in states], sst=[_stride(t) for t in states],
                        par=[_ptr(t) for t in params], spar=[_stride(t) for t in params],
                        sth=_stride(th), s=_ptr(s), h=_ptr(h) if want_h else None,
                        st_out=[_ptr(t) for t in out], tr=[_ptr(t) for t in tr]), backward=False)
    return [s, h, *out, *tr]


defined_forward = torch.library.custom_op("snnfunc::defined_forward", mutates_args=())(
    _forward_impl)


@defined_forward.register_fake
def _(x, states, params, th, scalars, neuron, options, hard, want_h, want_states=False):
    _parse_options(_check(neuron, x, states, params, th, scalars), options)
    c = COMPUTE.get(x.dtype, x.dtype)
    return [x.new_empty(x.shape), x.new_empty(x.shape if want_h else (0,)),
            *[x.new_empty(x.shape[1:], dtype=c) for _ in states],
            *[x.new_empty(x.shape if want_states else (0,), dtype=c) for _ in states]]


# --------------------------------------------------------------------------- backward op


def _check_backward(neuron, x, gs, gh, sg, gstates, need, gtraces=None, *, surrogate=None,
                    scalars=None):
    for name, t in (("gs", gs), ("gh", gh), ("sg", sg)):
        if t is not None:
            _ops._check_seq(name, t, x)
    if len(gstates) != len(neuron.states):
        raise ValueError(f"gstates must hold {len(neuron.states)} entries, got {len(gstates)}")
    for n, t in zip(neuron.states, gstates):
        if t is not None:
            _ops._check_step(f"gstates[{n}]", t, x, shared_ok=False,
                             dtype=COMPUTE.get(x.dtype, x.dtype))
    gtraces = [None] * len(neuron.states) if gtraces is None else gtraces
    if len(gtraces) != len(neuron.states):
        raise ValueError(f"gtraces must hold {len(neuron.states)} entries, got {len(gtraces)}")
    for n, t in zip(neuron.states, gtraces):
        if t is not None:
            _ops._check_seq(f"gtraces[{n}]", t, x, dtype=COMPUTE.get(x.dtype, x.dtype))
    if gs is None and gh is None and all(t is None for t in (*gstates, *gtraces)):
        raise ValueError("the backward op needs at least one of gs, gh, gstates and gtraces")
    n = len(neuron.parameters) + 1 + len(neuron.states)
    if len(need) != n or not all(isinstance(b, bool) for b in need):
        raise ValueError(f"need must hold {n} bools (each parameter, the threshold, then each "
                         f"state's initial value), got {need!r}")
    if sg is None:  # the kernel computes g'(u) from the surrogate's token and numbers
        n = scalar_count(surrogate)
        if scalars.numel() != n:
            raise ValueError(f"scalars must hold {n} values for this surrogate (v_rest and its "
                             f"run-time parameters), got {scalars.numel()}")


def derivative_rule_for(token: str, has_sg: bool):
    """How the kernel gets g'(u): from the `sg` tensor, or the surrogate's traced derivative
    (its run-time fields read from `scalars[1:]`)."""
    if has_sg:
        return lambda g, u: g.add("input", "sg")
    cls, fixed, runtime, digest = _decode(token)
    if not digest:
        raise ValueError(f"the surrogate {cls.__name__}'s derivative cannot be compiled into "
                         f"the kernel: pass sg, its derivative at every step")
    graph, _ = _trace_derivative(cls, fixed, runtime)
    if _digest(graph) != digest:
        raise ValueError(f"the surrogate class {cls.__name__} registered in this process is not "
                         f"the one the token was made from (it was defined again)")

    def rule(g, u):
        return _derivative_node(cls, fixed, runtime, g, u)

    return rule


def scalar_count(token: str) -> int:
    """How many numbers `scalars` holds with this surrogate: v_rest, then its run-time fields."""
    return 1 + len(_decode(token)[2])


def _backward_lib(neuron, opts_text, hard, detach, token, has_gs, has_gh, has_sg, has_gv, need,
                  dtype, has_gtr, shared):
    return _built_backward(neuron, opts_text, hard, detach, None if has_sg else token, has_gs,
                           has_gh, has_sg, has_gv, need, dtype, has_gtr, shared)


@functools.lru_cache(maxsize=KERNELS_IN_MEMORY)
def _built_backward(neuron, opts_text, hard, detach, token, has_gs, has_gh, has_sg, has_gv, need,
                    dtype, has_gtr, shared):
    src = _codegen.backward_source(
        neuron, _parse_options(neuron, opts_text), hard=hard, detach=detach,
        surrogate_derivative=derivative_rule_for(token, has_sg), has_gs=has_gs, has_gh=has_gh,
        has_gv=has_gv, need=need, dtype=DTYPES[dtype], has_gtr=has_gtr, shared=shared)
    return _build(src)


def _backward_impl(x: Tensor, states: list[Tensor], params: list[Tensor], th: Tensor,
                     gs: Optional[Tensor], gh: Optional[Tensor], sg: Optional[Tensor],
                     gstates: list[Optional[Tensor]], scalars: Tensor, neuron: str, options: str,
                     surrogate: str, hard: bool, detach: bool, need: list[bool],
                     gtraces: list[Optional[Tensor]]) -> list[Tensor]:
    nrn = _check(neuron, x, states, params, th, scalars)
    _check_backward(nrn, x, gs, gh, sg, gstates, need, gtraces, surrogate=surrogate,
                    scalars=scalars)
    scalars = scalars.contiguous()
    gtraces = [None if t is None else t.contiguous()
               for t in (gtraces or [None] * len(nrn.states))]
    opts_text = options_string(_parse_options(nrn, options))
    x, states, params, th = _io(x, states, params, th)
    gs, gh, sg = (None if t is None else t.contiguous() for t in (gs, gh, sg))
    gstates = [None if t is None else t.contiguous() for t in gstates]
    step = x.shape[1:]
    gx = x.new_empty(x.shape)
    compute = COMPUTE.get(x.dtype, x.dtype)  # step gradients: summed before the cast
    M = len(params)
    gst0 = [x.new_empty(step if need[M + 1 + k] else (0,), dtype=compute)
            for k in range(len(states))]
    gpar = [x.new_empty(step if need[k] else (0,), dtype=compute) for k in range(M)]
    gth = x.new_empty(step if need[M] else (0,), dtype=compute)
    lib = _backward_lib(nrn, opts_text, hard, detach, surrogate, gs is not None, gh is not None,
                        sg is not None, tuple(t is not None for t in gstates), tuple(need),
                        x.dtype, tuple(t is not None for t in gtraces), _shared(params, th))
    _run(lib, nrn, dict(T=x.shape[0], N=step.numel(), sc=scalars.data_ptr(), x=_ptr(x),
                        th=_ptr(th), gs=_ptr(gs), gh=_ptr(gh), sg=_ptr(sg),
                        st=[_ptr(t) for t in states], sst=[_stride(t) for t in states],
                        par=[_ptr(t) for t in params], spar=[_stride(t) for t in params],
                        sth=_stride(th), gst=[_ptr(t) for t in gstates],
                        gtr=[_ptr(t) for t in gtraces], gx=_ptr(gx),
                        gth=_ptr(gth), gst0=[_ptr(t) for t in gst0],
                        gpar=[_ptr(t) for t in gpar]), backward=True)
    return [gx, *gst0, *gpar, gth]


defined_backward = torch.library.custom_op("snnfunc::defined_backward", mutates_args=())(
    _backward_impl)


@defined_backward.register_fake
def _(x, states, params, th, gs, gh, sg, gstates, scalars, neuron, options, surrogate, hard,
      detach, need, gtraces):
    nrn = _check(neuron, x, states, params, th, scalars)
    _check_backward(nrn, x, gs, gh, sg, gstates, need, gtraces, surrogate=surrogate,
                    scalars=scalars)
    _parse_options(nrn, options)
    step = x.shape[1:]
    M = len(params)
    c = COMPUTE.get(x.dtype, x.dtype)
    return [x.new_empty(x.shape),
            *[x.new_empty(step if need[M + 1 + k] else (0,), dtype=c) for k in range(len(states))],
            *[x.new_empty(step if need[k] else (0,), dtype=c) for k in range(M)],
            x.new_empty(step if need[M] else (0,), dtype=c)]


# --------------------------------------------------------------------------- vmap rules


def _dims(d, n):
    return list(d) if isinstance(d, (list, tuple)) else [d] * n


def _forward_vmap(op):
    def rule(info, in_dims, x, states, params, th, scalars, *config):
        x = _ops._batched_seq(x, in_dims[0], info.batch_size)
        step = x.shape[1:]
        states = [_ops._batched_step(t, d, step) for t, d in zip(states, _dims(in_dims[1], len(states)))]
        params = [_ops._batched_step(t, d, step) for t, d in zip(params, _dims(in_dims[2], len(params)))]
        th = _ops._batched_step(th, in_dims[3], step)
        out = op(x, states, params, th, _ops._unbatched(scalars, in_dims[4]), *config)
        k = len(states)
        return out, [1, 1 if out[1].dim() else None, *[0] * k,
                     *[1 if t.dim() > 1 else None for t in out[2 + k:]]]
    return rule


def _backward_vmap(op):
    def rule(info, in_dims, x, states, params, th, gs, gh, sg, gstates, scalars, neuron,
             options, surrogate, hard, detach, need, gtraces):
        B = info.batch_size
        x = _ops._batched_seq(x, in_dims[0], B)
        gs, gh, sg = (_ops._batched_seq(t, in_dims[i], B) for t, i in ((gs, 4), (gh, 5), (sg, 6)))
        step = x.shape[1:]
        states = [_ops._batched_step(t, d, step) for t, d in zip(states, _dims(in_dims[1], len(states)))]
        params = [_ops._batched_step(t, d, step) for t, d in zip(params, _dims(in_dims[2], len(params)))]
        th = _ops._batched_step(th, in_dims[3], step)
        gstates = [None if t is None else _ops._batched_step(t, d, step)
                   for t, d in zip(gstates, _dims(in_dims[7], len(gstates)))]
        if gtraces is not None:
            gtraces = [_ops._batched_seq(t, d, B) if t is not None else None
                       for t, d in zip(gtraces, _dims(in_dims[15], len(gtraces)))]
        out = op(x, states, params, th, gs, gh, sg, gstates,
                 _ops._unbatched(scalars, in_dims[8]), neuron, options, surrogate, hard, detach,
                 need, gtraces)
        return out, [1, *[0 if t.dim() else None for t in out[1:]]]
    return rule


def register_vmap_rules(forward_op, backward_op):
    """The same batching rules for the CPU ops and the CUDA (Triton) ops."""
    torch.library.register_vmap(forward_op, _forward_vmap(forward_op))
    torch.library.register_vmap(backward_op, _backward_vmap(backward_op))


register_vmap_rules(defined_forward, defined_backward)


def _plain_context() -> bool:
    """Nothing above this call sees or traces the ops: no compile or export, no torch.func
    transform, no dispatch or function mode (a fake tensor mode), no TorchScript trace."""
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch._C._are_functorch_transforms_active()
            and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._is_torch_function_mode_enabled())


def _plain(x) -> bool:
    """An eager call on plain CPU tensors in a plain context: the op's implementation may be
    called without the dispatcher (tens of microseconds a call)."""
    return type(x) is Tensor and x.device.type == "cpu" and _plain_context()


def _ops_for(x):
    """The forward and backward ops for tensors like `x`."""
    if _plain(x):
        return _forward_impl, _backward_impl
    if x.device.type == "cuda":
        from snnfunc._fused import _generated_triton

        return _generated_triton.defined_forward_cuda, _generated_triton.defined_backward_cuda
    return defined_forward, defined_backward


# --------------------------------------------------------------------------- autograd


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything about a call that is not a tensor (hashable: compile guards on it)."""

    neuron: str
    options: str
    hard: bool
    detach: bool
    want_h: bool
    surrogate: str
    n_states: int
    want_states: bool = False
    sg_in_torch: bool = False  # the surrogate's derivative is computed in torch, not compiled in


def _step(t, x):
    """A step tensor as the kernels take it: one shared value, or [*S]."""
    return t.reshape(()) if t.numel() == 1 else t.expand(x.shape[1:])


def _reduced(grad, like):
    """A step tensor's gradient (computed per neuron, in the compute dtype) summed over the
    dimensions `like` was broadcast along, then cast to `like`'s dtype."""
    if grad.shape != like.shape:
        grad = grad.sum() if like.numel() == 1 else grad.sum_to_size(like.shape)
        grad = grad.reshape(like.shape)
    return grad.to(like.dtype)


class DefinedNeuron(torch.autograd.Function):
    """Forward: one call of the generated kernel. Backward: one call of the generated BPTT
    kernel from the saved input (nothing else per time step is kept)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, th, scalars, cfg: Config, *tensors):
        k = cfg.n_states
        shape = x.shape[1:]
        step = []
        for t in (th, *tensors):
            step.append(t.reshape(()) if t.numel() == 1 else t.expand(shape))
        out = _ops_for(x)[0](x, step[1:1 + k], step[1 + k:], step[0], scalars,
                                    cfg.neuron, cfg.options, cfg.hard, cfg.want_h,
                                    cfg.want_states)
        return tuple(out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, th, scalars, cfg, *tensors = inputs
        ctx.save_for_backward(x, th, scalars, *tensors)
        ctx.cfg = cfg
        if not cfg.want_h:
            ctx.mark_non_differentiable(output[1])
        if not cfg.want_states:
            ctx.mark_non_differentiable(*output[2 + cfg.n_states:])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gs, gh, *rest):
        x, th, scalars, *tensors = ctx.saved_tensors
        cfg = ctx.cfg
        k = cfg.n_states
        gstates = rest[:k]
        gtraces = list(rest[k:2 * k]) if cfg.want_states else [None] * k
        n_params = len(tensors) - k
        needs = ctx.needs_input_grad
        need = (*(bool(needs[4 + k + j]) for j in range(n_params)), bool(needs[1]),
                *(bool(needs[4 + j]) for j in range(k)))
        gh = gh if cfg.want_h else None
        if gs is None and gh is None and all(g is None for g in (*gstates, *gtraces)):
            return (None,) * (4 + len(tensors))
        sg = None
        if cfg.sg_in_torch:  # its derivative is evaluated in torch, on h - th,
            # through the Function (not the bare op), so torch.func transforms can trace it
            h = DefinedNeuron.apply(x, th, scalars,
                                    dataclasses.replace(cfg, want_h=True, want_states=False),
                                    *tensors)[1]
            from snnfunc import surrogate as _sg

            sg = _sg.derivative(_surrogate(cfg.surrogate), h - th).contiguous()
        if torch.compiler.is_compiling() or not torch.is_grad_enabled() and _plain(x):
            # the op itself (no torch.func transform to see; no graph of the backward to
            # differentiate again)
            grads = _ops_for(x)[1](
                x, [_step(t, x) for t in tensors[:k]], [_step(t, x) for t in tensors[k:]],
                _step(th, x), gs, gh, sg, list(gstates), scalars, cfg.neuron, cfg.options,
                cfg.surrogate, cfg.hard, cfg.detach, list(need), gtraces)
        else:
            config = (cfg.neuron, cfg.options, cfg.surrogate, cfg.hard, cfg.detach, k, *need)
            grads = DefinedNeuronBackward.apply(x, _step(th, x), scalars, config, gs, gh, sg,
                                                *gstates, *gtraces,
                                                *(_step(t, x) for t in tensors))
        gx, gst0 = grads[0], grads[1:1 + k]
        gpar, gth = grads[1 + k:1 + k + n_params], grads[1 + k + n_params]
        states, params = tensors[:k], tensors[k:]
        return (gx, _reduced(gth, th) if need[n_params] else None, None, None,
                *(_reduced(g, t) if needs[4 + j] else None
                  for j, (g, t) in enumerate(zip(gst0, states))),
                *(_reduced(g, t) if need[j] else None
                  for j, (g, t) in enumerate(zip(gpar, params))))


class DefinedNeuronBackward(torch.autograd.Function):
    """The generated BPTT kernel as a function, so that torch.func transforms see it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, th, scalars, config, gs, gh, sg, *rest):
        neuron, options, surrogate, hard, detach, k = config[:6]
        need = config[6:]
        gstates, gtraces = list(rest[:k]), list(rest[k:2 * k])
        states, params = list(rest[2 * k:3 * k]), list(rest[3 * k:])
        return tuple(_ops_for(x)[1](x, states, params, th, gs, gh, sg, gstates, scalars,
                                           neuron, options, surrogate, hard, detach, list(need),
                                           gtraces))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "the fused neuron kernel is differentiable once; for higher-order gradients call "
            "the neuron with impl='reference'")


# --------------------------------------------------------------------------- entry point


@torch.compiler.assume_constant_result
def _token(surrogate) -> tuple:
    """(token, run-time numbers): constants to torch.compile."""
    plan = surrogate_plan(surrogate)
    return plan.token, plan.values


@torch.compiler.assume_constant_result
def _surrogate_reason(surrogate) -> str:
    return why_not_surrogate(surrogate) or ""


def why_not(x_seq, surrogate, neuron=None) -> str | None:
    """Why the generated kernels cannot take this call, or None when they can."""
    from snnfunc import _fused

    if x_seq.dtype not in DTYPES:
        return f"the fused kernels take float16, bfloat16, float32 and float64, not {x_seq.dtype}"
    if x_seq.device.type == "cuda":
        if _fused._cuda_error() is not None:
            return _fused._cuda_error()
    elif x_seq.device.type != "cpu":
        return f"no fused kernel for device {x_seq.device.type}"
    elif _fused._cpu_error() is not None:
        return _fused._cpu_error()
    if x_seq.shape[0] == 0:
        return "T = 0"
    if not torch.compiler.is_compiling() and _fused._forward_ad_active():
        return "forward-mode AD (jvp, jacfwd) has no rule through the fused op"
    reason = _surrogate_reason(surrogate)
    if reason and neuron is not None and neuron.threshold is not None:
        return reason + ", and the neuron's threshold is not v_threshold"
    return None


_apply = super(torch.autograd.Function, DefinedNeuron).apply
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
def _scalars(x_seq, v_reset, values=()):
    """The op's float64 scalars (v_rest, then the surrogate's run-time numbers) as a tensor:
    one per set of values in eager calls."""
    device = x_seq.device if x_seq.device.type == "cuda" else torch.device("cpu")
    v = 0.0 if v_reset is None else v_reset
    if not isinstance(v, (float, int)) or not _plain_context():  # (a traced or fake tensor
        return _new_scalars(device, v, values)  # must not be cached)
    return _cached_scalars(device, repr(float(v)), values)  # repr: -0.0 and 0.0 apart


@functools.lru_cache(maxsize=64)
def _cached_scalars(device, text, values):
    return _new_scalars(device, float(text), values)


def _new_scalars(device, v, values=()):
    zero = torch.full((1,), -0.0, dtype=torch.float64, device=device)  # -0.0 + v is v, even -0.0
    if not values:
        return zero + v
    return torch.cat([zero + v, torch.tensor(values, dtype=torch.float64, device=device)])


def run(neuron, x_seq, states, params, opts, *, v_threshold, v_reset, surrogate, detach_reset,
        return_h, force, return_states=False):
    """The fused neuron `(spikes, h or None, states, traces or None)`, or None where it does
    not apply."""
    from snnfunc import _fused

    reason = why_not(x_seq, surrogate, neuron)
    if reason is not None:
        if force:
            raise ValueError(f"impl='fused' is not available: {reason}; use impl='auto'")
        _fused._fell_back(reason)
        return None
    token, values = _token(surrogate)
    in_torch = bool(_surrogate_reason(surrogate))
    cfg = Config(neuron.name, options_string(opts), v_reset is not None, detach_reset,
                 return_h or return_states, token, len(states), return_states, in_torch)
    scalars = _scalars(x_seq, v_reset, values)
    tensors = (*states, *(params[n] for n in neuron.parameters))
    if torch.compiler.is_compiling() and not (torch.is_grad_enabled() and any(
            t.requires_grad for t in (x_seq, v_threshold, *tensors))):
        # nothing to differentiate: the op itself (Dynamo would pass the Function's apply a
        # context its forward does not take)
        out = DefinedNeuron.forward(x_seq, v_threshold, scalars, cfg, *tensors)
    elif _plain(x_seq) and not any(map(_wrapped, (x_seq, v_threshold, *tensors))):
        # Function.apply without its binding of default arguments (inspect.signature)
        out = _apply(x_seq, v_threshold, scalars, cfg, *tensors)
    else:
        out = DefinedNeuron.apply(x_seq, v_threshold, scalars, cfg, *tensors)
    k = len(states)
    s, h, st, tr = out[0], out[1], tuple(out[2:2 + k]), tuple(out[2 + k:])
    return s, (h if return_h or return_states else None), st, (tr if return_states else None)
