"""Training on long sequences in less memory.

- `packed_spikes()`: while it is active, every spike tensor that snnfunc's neurons return, and
  that any torch layer saves for backward (Linear, Conv, matmul, pooling, ...), is stored with
  1 bit per spike and unpacked in the backward pass. Gradients are bit for bit those of
  training without it.
- `checkpointed(fn, x_seq, state, chunk=...)`: exact BPTT through chunks of time steps, keeping
  the states between chunks and recomputing one chunk at a time in the backward pass.
- `truncated_bptt(fn, x_seq, state, chunk=...)`: the chunks one after the other, the state
  carried and detached between them, for a loss and a backward pass per chunk.

`fn(x_chunk, state) -> (y_chunk, state)` is a pure function of a chunk `[t, ...]` and the state
(a tensor, a tuple of tensors, a `NeuronOutput`, or `None` at the start), for example a layer
and a neuron from `snnfunc.functional`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import weakref

import torch
from torch.utils import _pytree

__all__ = ["packed_spikes", "PackedStats", "checkpointed", "truncated_bptt"]

_spikes: contextvars.ContextVar = contextvars.ContextVar("snnfunc_spikes", default=None)


@dataclasses.dataclass
class PackedStats:
    """What was saved for backward while `packed_spikes()` was active, in bytes.

    Attributes:
      spike_bytes: the spike tensors as stored (1 bit per spike, rounded up to bytes).
      spike_bytes_unpacked: the same tensors as they would have been stored unpacked.
      other_bytes: every other saved tensor (inputs, weights, ...), as stored.
    """

    spike_bytes: int = 0
    spike_bytes_unpacked: int = 0
    other_bytes: int = 0

    @property
    def saved_bytes(self) -> int:
        """Everything saved, as stored."""
        return self.spike_bytes + self.other_bytes


def register_spikes(spikes: torch.Tensor) -> torch.Tensor:
    """Marks `spikes` (values 0 and 1 only) as packable while `packed_spikes()` is active;
    the neuron functions call it on what they return. Returns `spikes`."""
    if torch.compiler.is_compiling():  # compiled graphs keep their own saved tensors
        return spikes
    live = _spikes.get()
    if live is not None and not _wrapped(spikes):
        live[spikes.untyped_storage().data_ptr()] = weakref.ref(spikes)
    return spikes


def _wrapped(t) -> bool:
    """A tensor whose storage cannot be read here: a functorch wrapper, a fake or a subclass."""
    return (type(t) not in (torch.Tensor, torch.nn.Parameter)
            or torch._C._functorch.is_functorch_wrapped_tensor(t))


_SHIFTS = {}


def _shifts(device):
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return _SHIFTS[device]


def _pack_bits(t: torch.Tensor):
    flat = t.detach().reshape(-1) != 0
    n = flat.numel()
    if n % 8:
        flat = torch.cat([flat, flat.new_zeros(8 - n % 8)])
    packed = (flat.view(-1, 8).to(torch.uint8) << _shifts(t.device)).sum(1, dtype=torch.uint8)
    return packed, n


def _unpack_bits(packed, n, shape, dtype):
    bits = (packed.unsqueeze(1) >> _shifts(packed.device)) & 1
    return bits.reshape(-1)[:n].to(dtype).view(shape)


class _Packed:
    __slots__ = ("bits", "n", "shape", "dtype", "requires_grad")

    def __init__(self, t):
        self.bits, self.n = _pack_bits(t)
        self.shape, self.dtype, self.requires_grad = t.shape, t.dtype, t.requires_grad


class packed_spikes(contextlib.ContextDecorator):
    """Stores spike tensors saved for backward with 1 bit per spike (a context manager or a
    decorator).

    Under it, every spike tensor that snnfunc's neurons return (and any view of one) that an
    operation saves for its backward pass is packed into bits (32x less than float32, 16x less
    than float16) and unpacked when the backward pass needs it. The values are 0 and 1, so
    unpacking restores them exactly and the gradients are bit for bit the same as without it.
    Other saved tensors are stored as usual.

    - `torch.compile`: spikes made inside a compiled region are not packed (the compiled graph
      keeps its own saved tensors); eager code around it still is. Results are unchanged.
    - `torch.func` transforms: `grad`, `vjp`, `jacrev` and `hessian` refuse saved-tensor hooks
      (a torch limitation: "don't yet support saved tensor hooks"), so call them outside
      `packed_spikes()`; `vmap` and `jvp` run under it and pack nothing of theirs.
    - A spike tensor changed in place after it was returned must not be saved under it.

    Example:

            with snnfunc.memory.packed_spikes() as stats:
                loss = net(x).sum()
            loss.backward()
            stats.spike_bytes, stats.spike_bytes_unpacked
    """

    def __init__(self):
        self.stats = PackedStats()
        self._hooks = None
        self._token = None

    def __enter__(self) -> PackedStats:
        self.stats = PackedStats()
        live = {}  # storage address -> weak reference to a spike tensor there
        self._token = _spikes.set(live)
        stats = self.stats

        def is_spike(t):
            if _wrapped(t) or t.layout != torch.strided or not t.is_floating_point():
                return False
            ptr = t.untyped_storage().data_ptr()
            ref = live.get(ptr)
            s = None if ref is None else ref()  # a dead reference: the address was reused
            return s is not None and s.untyped_storage().data_ptr() == ptr and s.dtype == t.dtype

        def pack(t):
            if is_spike(t):
                p = _Packed(t)
                stats.spike_bytes += p.bits.numel()
                stats.spike_bytes_unpacked += t.numel() * t.element_size()
                return p
            if isinstance(t, torch.Tensor) and not _wrapped(t):
                stats.other_bytes += t.untyped_storage().nbytes() if t.numel() else 0
            return t

        def unpack(p):
            if isinstance(p, _Packed):
                return _unpack_bits(p.bits, p.n, p.shape, p.dtype)
            return p

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, unpack)
        self._hooks.__enter__()
        return stats

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        _spikes.reset(self._token)
        return False


def _detach(state):
    return _pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, state)


def _check_chunk(x_seq, chunk):
    if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 1:
        raise ValueError("x_seq must be a time-major tensor [T, ...]")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (time steps per chunk), got {chunk!r}")


def checkpointed(fn, x_seq, state=None, *, chunk: int):
    """Exact BPTT over `x_seq` in chunks of `chunk` steps, recomputing each chunk in backward.

    Runs `y, state = fn(x_chunk, state)` on `x_seq.split(chunk)`, each chunk under
    `torch.utils.checkpoint` (non-reentrant): the forward pass keeps only the states between
    chunks (and `fn`'s inputs); the backward pass recomputes one chunk at a time. Gradients
    equal those of running `fn` on the whole sequence (the recomputation is deterministic; the
    RNG state is restored for dropout), up to the order in which a parameter's gradient is
    summed over the chunks. `fn` must be pure: a stateful adapter would advance its
    state twice.

    Args:
      fn: `fn(x_chunk, state) -> (y_chunk, state)`, with `y_chunk` a tensor `[t, ...]`.
      x_seq: the input sequence `[T, ...]`.
      state: the initial state passed to the first chunk (`None` for rest).
      chunk: time steps per chunk.

    Returns:
      `(y_seq, state)`: the chunks' outputs concatenated along time, and the final state.
    """
    _check_chunk(x_seq, chunk)
    outs = []
    for x in x_seq.split(chunk):
        y, state = torch.utils.checkpoint.checkpoint(fn, x, state, use_reentrant=False)
        outs.append(y)
    return torch.cat(outs), state


def truncated_bptt(fn, x_seq, state=None, *, chunk: int):
    """Truncated BPTT: yields `fn`'s output chunk by chunk, the state detached in between.

    For `x` in `x_seq.split(chunk)`: `y, state = fn(x, state)`, yield `y`; when the loop comes
    back (after the caller's loss and backward for that chunk) the state is detached, so the
    next chunk's graph starts from its value: memory is one chunk's, and gradients do not flow
    across chunk boundaries.

    Example:

            for y, target in zip(snnfunc.memory.truncated_bptt(fn, x_seq, chunk=50),
                                 targets.split(50)):
                loss = loss_fn(y, target)
                opt.zero_grad(); loss.backward(); opt.step()

    Args:
      fn: `fn(x_chunk, state) -> (y_chunk, state)`.
      x_seq: the input sequence `[T, ...]`.
      state: the initial state (`None` for rest).
      chunk: time steps per chunk.

    Yields:
      Each chunk's output `y_chunk`.
    """
    _check_chunk(x_seq, chunk)
    for x in x_seq.split(chunk):
        y, state = fn(x, state)
        yield y
        state = _detach(state)
