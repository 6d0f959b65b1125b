"""The recurrent layer as a function: `rnn`, its arguments and the loop that defines it."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from snnfunc.functional import lif
from snnfunc import sparse
from snnfunc.recurrent import operator, steps

__all__ = ["RecurrentOutput", "RecurrentState", "rnn"]

_IMPLS = ("auto", "op", "loop")
_RESERVED = ("return_h", "impl", "return_states")


class RecurrentState(NamedTuple):
    """The state of a recurrent layer: the neuron's state and the last step's spikes `[B, N]`."""

    neuron: Any
    spikes: Tensor


class RecurrentOutput(NamedTuple):
    """Result of `rnn`: `spikes` `[T, B, N]` and the `RecurrentState` to continue from."""

    spikes: Tensor
    state: RecurrentState


def _pack(state_type, parts):
    return parts[0] if state_type is None else state_type(*parts)


def _unpack(state) -> list:
    return [state] if isinstance(state, Tensor) else list(state)


def _autocast(x_seq) -> bool:
    """Autocast is on for x_seq's device: it sets the dtypes of the layer's products (which run
    in the loop), so the weights may have another dtype than x_seq."""
    return torch.is_autocast_enabled(x_seq.device.type)


def _check_input(x_seq, input_weight, sparse_input) -> int:
    """N, the number of neurons: `input_weight`'s rows, else `x_seq`'s last dimension."""
    if not isinstance(sparse_input, bool):
        raise TypeError(f"sparse_input must be True or False, got {sparse_input!r}")
    if input_weight is None:
        if sparse_input:
            raise TypeError("sparse_input=True goes with input_weight (the product it makes "
                            "sparse); without one, put a snnfunc.nn.SpikeLinear before the layer")
        return x_seq.shape[-1]
    if not isinstance(input_weight, Tensor) or input_weight.layout != torch.strided:
        raise TypeError(f"input_weight must be a dense tensor [N, M] or None, got "
                        f"{getattr(input_weight, 'layout', type(input_weight).__name__)}")
    m = x_seq.shape[-1]
    if input_weight.dim() != 2 or input_weight.shape[1] != m:
        raise ValueError(f"input_weight must have shape [N, M] with M = x_seq.shape[-1] = {m}, "
                         f"got {list(input_weight.shape)}")
    if (input_weight.dtype != x_seq.dtype and not _autocast(x_seq)
            or input_weight.device != x_seq.device):
        raise ValueError(f"input_weight ({input_weight.dtype}, {input_weight.device}) must have "
                         f"x_seq's dtype and device ({x_seq.dtype}, {x_seq.device})")
    return input_weight.shape[0]


def _check(x_seq, weight, bias, neuron, impl, detach_recurrent, neuron_kwargs, input_weight,
           sparse_input) -> int:
    """N, the number of neurons, once every argument is checked."""
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be time-major [T, B, N] (or [T, N]), got shape "
                         f"{tuple(x_seq.shape)}")
    if not x_seq.is_floating_point():
        raise TypeError(f"x_seq must have a floating dtype, got {x_seq.dtype}")
    if x_seq.layout != torch.strided:
        raise TypeError(f"x_seq must be a dense (strided) tensor, got {x_seq.layout}")
    if not callable(neuron):
        raise TypeError(f"neuron must be a neuron function such as snnfunc.lif, got "
                        f"{type(neuron).__name__}")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if not isinstance(detach_recurrent, bool):
        raise TypeError(f"detach_recurrent must be True or False, got {detach_recurrent!r}")
    for name in _RESERVED:
        if name in neuron_kwargs:
            raise TypeError(f"{name}= is not a neuron option rnn passes on (rnn calls the neuron "
                            f"itself, one step at a time)")
    n = _check_input(x_seq, input_weight, sparse_input)
    if isinstance(weight, Tensor):
        if weight.shape != (n, n):
            raise ValueError(f"weight must have shape [N, N] = {[n, n]} (N = x_seq.shape[-1], "
                             f"or input_weight's rows), got {list(weight.shape)}")
        if weight.dtype != x_seq.dtype and not _autocast(x_seq) or weight.device != x_seq.device:
            raise ValueError(f"weight ({weight.dtype}, {weight.device}) must have x_seq's dtype "
                             f"and device ({x_seq.dtype}, {x_seq.device})")
    elif not callable(weight):
        raise TypeError(f"weight must be a tensor [N, N] or a callable (a module such as "
                        f"torch.nn.Linear(N, N)), got {type(weight).__name__}")
    elif bias is not None:
        raise TypeError("bias= goes with a weight tensor; a callable weight includes its own")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a tensor [N] or None, got {type(bias).__name__}")
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape [N] = [{n}], got {list(bias.shape)}")
    return n


def _initial_state(state, x_seq, neuron, neuron_kwargs):
    """(neuron state, previous spikes or None) from `state`, checked."""
    if state is None:
        u, s0 = None, None
    elif isinstance(state, RecurrentState):
        u, s0 = state
    else:
        raise TypeError(f"state must be a RecurrentState(neuron, spikes) from an earlier call, "
                        f"or None for rest; got {type(state).__name__}")
    step = x_seq.shape[1:]
    if s0 is not None:
        if not isinstance(s0, Tensor):
            raise TypeError(f"state.spikes must be a tensor, got {type(s0).__name__}")
        try:
            ok = torch.broadcast_shapes(s0.shape, step) == step
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"state.spikes has shape {tuple(s0.shape)}, which does not broadcast "
                             f"to one time step of x_seq, {tuple(step)} (a new batch size? start "
                             f"from state=None)")
    if u is None:  # the neuron's resting state: what it returns for an empty sequence
        _, u = neuron(x_seq[:0], None, **neuron_kwargs)
    parts = _unpack(u)
    if not all(isinstance(p, Tensor) for p in parts):
        raise TypeError("state.neuron must be a tensor or a NamedTuple of tensors (the neuron's "
                        "own state)")
    parts = [p.to(x_seq.dtype).expand(step) if p.shape != step else p for p in parts]
    return (None if isinstance(u, Tensor) else type(u)), parts, s0


def _loop(x_seq, state_type, parts, s0, rec, neuron, detach, neuron_kwargs):
    """The Python loop: one map and one neuron call per step (the definition of `rnn`)."""
    u, s = _pack(state_type, parts), s0
    spikes = []
    for x in x_seq.unbind(0):
        if s is not None:
            x = x + rec(s.detach() if detach else s)
        out, u = neuron(x[None], u, **neuron_kwargs)
        s = out[0]
        spikes.append(s)
    return torch.stack(spikes), u


def rnn(x_seq: Tensor, state: RecurrentState | None = None, *, weight, bias: Tensor | None = None,
        input_weight: Tensor | None = None, sparse_input: bool = False,
        sparse_recurrent: bool = False, neuron: Callable = lif,
        detach_recurrent: bool = False, batch_first: bool = False, impl: str = "auto",
        **neuron_kwargs) -> RecurrentOutput:
    r"""A recurrent spiking layer over a time-major sequence.

    Every step feeds the previous step's spikes back through the recurrent map:

    $$I_t = X_t + W S_{t-1} + b, \qquad (S_t, U_t) = \mathrm{neuron}(I_t, U_{t-1}),$$

    with $S_0$ = `state.spikes` (no recurrent input at the first step when `state` is None, so
    $I_1 = X_1 + b$) and $U_0$ = `state.neuron` (rest when None). Semantically, with
    `s = x_seq.new_zeros(x_seq.shape[1:])`:
    `for x in x_seq: spk, u = neuron((x + F.linear(s, weight, bias))[None], u, **neuron_kwargs); s = spk[0]`.

    With an `input_weight` $W_{in}$ the layer takes the input itself, `[T, B, M]`, and
    $X = x W_{in}^\top$ (`torch.nn.Linear(M, N, bias=False)` put inside the layer, as
    `torch.nn.RNN` and Norse's `LIFRecurrent` have it): the layer then computes $I$ in the
    place of $X$, which it owns, one `[T, B, N]` tensor less alive at its peak.

    Args:
      x_seq: the input currents $X$ (the feed-forward part, e.g. `fc(x)`), shape `[T, B, N]`
        (or `[T, N]`), floating dtype; with `input_weight`, the input `[T, B, M]`.
      state: `RecurrentState(neuron, spikes)` from an earlier call to continue from, or
        `None` for rest and no previous spikes.
      weight: the recurrent map: a weight tensor $W$ `[N, N]` (applied as `F.linear(s, W, b)`,
        row `i` holds the weights into neuron `i`), or any callable mapping spikes `[B, N]` to
        `[B, N]`, such as `torch.nn.Linear(N, N)` (whose weight and bias then take the
        operator's path) or a sparse or low-rank module (run as a Python loop).
      bias: $b$ `[N]` with a weight tensor, or `None`.
      input_weight: $W_{in}$ `[N, M]` (row `i` holds the weights into neuron `i`), or `None`
        (`x_seq` is $X$).
      sparse_input: the input is mostly 0 (spikes): $X$ and $W_{in}$'s gradient by adding
        $W_{in}$'s columns where the input is not 0, `snnfunc.sparse.linear` (as
        `snnfunc.nn.SpikeLinear` computes them: results to rounding those of
        `torch.nn.functional.linear`). Needs `input_weight`.
      sparse_recurrent: the recurrent product $W S_{t-1} + b$ as `snnfunc.sparse.linear`
        computes it (adding $W$'s columns where the spikes are not 0; its gradients as
        `SpikeLinear`'s), instead of `F.linear`'s: a weight tensor's, run by the operator
        with the weight prepared once for all steps. Results to rounding those of `F.linear`.
      neuron: the neuron function: `snnfunc.lif` (default), `if_`, `plif`, `rif`, or any
        function `neuron(x_seq, state, **kwargs) -> (spikes, state)` whose state is a tensor
        or a NamedTuple of tensors of one step's shape (`None` meaning rest).
      detach_recurrent: detach the spikes fed back from the graph: no gradient flows from
        $I_t$ to $S_{t-1}$ (the weight's gradient still does).
      batch_first: `x_seq` is `[B, T, N]` (read in place, no copy) and so are the spikes.
      impl: `"auto"` (default) runs the time loop as one operator where it applies (a weight
        tensor or `nn.Linear`, a neuron made from a definition: snnfunc's neuron functions
        and `snnfunc.neuron`'s, with fused kernels on the device), the Python loop elsewhere;
        `"op"` forces the operator (a `ValueError` says why it does not apply) and `"loop"`
        the loop.
      **neuron_kwargs: the neuron's options, passed on at every step: `tau=2.0`,
        `surrogate=ATan()`, `w=...` for PLIF, `v_reset=None`, ... (not `return_h`).

    Returns:
      `RecurrentOutput(spikes, state)`: `spikes` `[T, B, N]` and
        `state = RecurrentState(neuron, spikes)`, the neuron's final state and the last
        step's spikes `[B, N]`, to pass to the next call. For `T = 0`, `spikes` is empty and
        the state is the initial one.
    """
    if batch_first is not False:
        if batch_first is not True:
            raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
        if not isinstance(x_seq, Tensor) or x_seq.dim() < 3:
            raise ValueError(f"x_seq must be [B, T, N] with batch_first=True, got "
                             f"{getattr(x_seq, 'shape', type(x_seq).__name__)}")
        out = rnn(x_seq.transpose(0, 1), state, weight=weight, bias=bias,
                  input_weight=input_weight, sparse_input=sparse_input,
                  sparse_recurrent=sparse_recurrent, neuron=neuron,
                  detach_recurrent=detach_recurrent, impl=impl, **neuron_kwargs)
        return RecurrentOutput(out.spikes.transpose(0, 1), out.state)
    if not isinstance(sparse_recurrent, bool):
        raise TypeError(f"sparse_recurrent must be True or False, got {sparse_recurrent!r}")
    if sparse_recurrent and not isinstance(weight, (Tensor, nn.Linear)):
        raise TypeError("sparse_recurrent=True goes with a weight tensor or a torch.nn.Linear "
                        "(the product it makes sparse)")
    args = (neuron, impl, detach_recurrent, neuron_kwargs, input_weight, sparse_input)
    n = _check(x_seq, weight, bias, *args)
    if isinstance(weight, nn.Linear):
        weight, bias = weight.weight, weight.bias
        _check(x_seq, weight, bias, *args)
    # X's shape, dtype and device (with an input weight X is not made yet: a view of nothing)
    like = x_seq if input_weight is None else \
        torch.zeros((), dtype=x_seq.dtype, device=x_seq.device).expand(*x_seq.shape[:-1], n)
    state_type, parts, s0 = _initial_state(state, like, neuron, neuron_kwargs)
    if x_seq.shape[0] == 0:
        u = _pack(state_type, parts)
        return RecurrentOutput(x_seq.new_empty(like.shape), RecurrentState(u, s0))
    if isinstance(weight, Tensor) and impl != "loop":
        if _autocast(x_seq):
            prepared, reason = None, ("autocast is on (the loop runs the layer's products as "
                                      "autocast says)")
        else:
            prepared, reason = operator.prepare(neuron, like, neuron_kwargs)
        if prepared is not None:
            spikes, states = operator.run(prepared, x_seq, parts, s0, weight, bias,
                                          detach_recurrent, input_weight, sparse_input,
                                          sparse_recurrent)
            u = _pack(state_type, [p[-1] for p in states])
            return RecurrentOutput(spikes, RecurrentState(u, spikes[-1].clone()))
        if impl == "op":
            raise ValueError(f"impl='op' is not available: {reason}; use impl='auto'")
    elif impl == "op":
        raise TypeError("impl='op' needs weight to be a tensor or a torch.nn.Linear")
    if input_weight is not None:  # X, then the loop over it
        x_seq = steps.input_current(x_seq, input_weight, sparse_input)
    if isinstance(weight, Tensor):
        w, b = weight, bias
        product = sparse.linear if sparse_recurrent else torch.nn.functional.linear
        rec = lambda s: product(s, w, b)  # noqa: E731
        s_first = s0
    else:
        rec, s_first = weight, s0
    if s_first is None and bias is not None:
        x_seq = torch.cat([x_seq[:1] + bias, x_seq[1:]])
    spikes, u = _loop(x_seq, state_type, parts, s_first, rec, neuron, detach_recurrent,
                      neuron_kwargs)
    return RecurrentOutput(spikes, RecurrentState(u, spikes[-1]))
