"""Training on long sequences in less memory.

- `packed_spikes()`: while it is active, every spike tensor that snnfunc's neurons return, and
  that any torch layer saves for backward (Linear, Conv, matmul, pooling, ...), is stored with
  1 bit per spike and unpacked in the backward pass. Gradients are bit for bit those of
  training without it.
- `checkpointed(fn, x_seq, state, chunk=...)`: exact BPTT through chunks of time steps, keeping
  the states between chunks and recomputing one chunk at a time in the backward pass.
- `truncated_bptt(fn, x_seq, state, chunk=...)`: the chunks one after the other, the state
  carried and detached between them, for a loss and a backward pass per chunk.
- `MaxPool2d(k)`: `torch.nn.MaxPool2d(k)` that saves one byte per output for backward (not
  its input and int64 indices); `recompute(module, *args)`: a module (a static Conv-BN
  encoder) run again in the backward pass instead of saving what it saves. Both exact.

`fn(x_chunk, state) -> (y_chunk, state)` is a pure function of a chunk `[t, ...]` and the state
(a tensor, a tuple of tensors, a `NeuronOutput`, or `None` at the start), for example a layer
and a neuron from `snnfunc.functional`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
import weakref

import torch
from torch.utils import _pytree

__all__ = ["packed_spikes", "PackedStats", "spike_counts", "checkpointed", "truncated_bptt",
           "MaxPool2d", "recompute"]

_spikes: contextvars.ContextVar = contextvars.ContextVar("snnfunc_spikes", default=None)


@dataclasses.dataclass
class PackedStats:
    """What was saved for backward while `packed_spikes()` was active, in bytes.

    Attributes:
      spike_bytes: the spike tensors as stored (1 bit per spike, rounded up to bytes), and the
        tensors of spike counts (`spike_counts`: 1 byte per count).
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


def register_spikes(spikes: torch.Tensor, kind: str = "bits") -> torch.Tensor:
    """Marks `spikes` (values 0 and 1 only) as packable while `packed_spikes()` is active;
    the neuron functions call it on what they return. Returns `spikes`. `kind="bytes"`:
    counts (`spike_counts`), stored as bytes where they are integers 0 to 255."""
    if torch.compiler.is_compiling():  # compiled graphs keep their own saved tensors
        return spikes
    live = _spikes.get()
    if live is not None and not _wrapped(spikes):
        live[spikes.untyped_storage().data_ptr()] = (weakref.ref(spikes), kind)
    return spikes


def spike_counts(counts: torch.Tensor) -> torch.Tensor:
    """Marks `counts`, a float tensor of small counts (a sum of spike tensors, as the
    spike-element-wise sum of SEW-ResNet's blocks), for `packed_spikes()`: where a layer saves
    it for its backward pass, it is stored with one byte per value (4x less than float32)
    if every value is an integer from 0 to 255, bit for bit (checked when it is saved: any
    other tensor is stored as it is, so the gradients are those of training without it
    either way). Outside `packed_spikes()`, and under `torch.compile`, it does nothing.
    Returns `counts`.

    Example:

            out = memory.spike_counts(identity + spikes)  # values 0, 1, 2
    """
    if not isinstance(counts, torch.Tensor) or not counts.is_floating_point():
        raise TypeError(f"counts must be a float tensor, got {type(counts).__name__}"
                        + (f" of {counts.dtype}" if isinstance(counts, torch.Tensor) else ""))
    return register_spikes(counts, "bytes")


def _wrapped(t) -> bool:
    """A tensor whose storage cannot be read here: a functorch wrapper, a fake or a subclass."""
    return (type(t) not in (torch.Tensor, torch.nn.Parameter)
            or torch._C._functorch.is_functorch_wrapped_tensor(t))


def _marked(live: dict, t) -> str | None:
    """How `t` was marked in `live` (`register_spikes`): "bits" (a spike tensor or a view of
    one), "bytes" (counts), or None."""
    if (not isinstance(t, torch.Tensor) or _wrapped(t) or t.layout != torch.strided
            or not t.is_floating_point()):
        return None
    ptr = t.untyped_storage().data_ptr()
    ref, kind = live.get(ptr, (None, None))
    s = None if ref is None else ref()  # a dead reference: the address was reused
    ok = s is not None and s.untyped_storage().data_ptr() == ptr and s.dtype == t.dtype
    return kind if ok else None


_SHIFTS = {}


def _shifts(device):
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return _SHIFTS[device]


_CHUNK_BITS = 1 << 18  # spikes packed or unpacked at a time (a multiple of 8): the byte per
# spike of the steps between stays a quarter MiB, not as many bytes as the tensor has spikes
_LITTLE = sys.byteorder == "little"  # 8 bytes read as one int64: byte k is bits 8k to 8k + 7


def _pack_chunk(spikes: torch.Tensor, out: torch.Tensor) -> None:
    """Bits of `spikes` (1-d) into `out` (uint8), spike k of a byte at bit k: on a little-endian
    machine 8 spikes a word, each word's byte k (0 or 1) shifted down to bit k by folding the
    word onto itself (no per-bit loop, no multiplication)."""
    part = spikes != 0
    if part.numel() % 8:
        part = torch.cat([part, part.new_zeros(8 - part.numel() % 8)])
    if _LITTLE:
        w = part.view(torch.uint8).view(torch.int64)
        folded = w >> 7
        folded |= w  # each byte's bit 0 next to the byte above's: pairs, then quads, ...
        del w, part  # (one chunk's bytes alive at a time besides the words)
        folded |= folded >> 14
        folded |= folded >> 28
        out.copy_(folded)  # the low byte of each word (a cast to uint8 keeps it)
    else:
        torch.sum(part.view(-1, 8).to(torch.uint8) << _shifts(part.device), 1,
                  dtype=torch.uint8, out=out)


BIT_KERNELS: dict = {}
"""Packing spikes into bits and back, by device type, which a backend registers (the C
backend for "cpu"): `(runs(device, dtype) -> bool, pack(flat) -> uint8 bits, unpack(bits, n,
dtype) -> flat values)` on contiguous tensors, bit k of byte i for value 8i + k, set where the
value is not 0 (as `_pack_chunk`). Elsewhere torch's ops below."""


def _dense_order(t: torch.Tensor):
    """The order of `t`'s dimensions, outermost first, in which it lies densely in memory where
    that is not its own (a channels-last tensor), else None (contiguous, or dense in no order:
    read through a copy)."""
    if t.dim() < 2 or t.is_contiguous():
        return None
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    expected = 1
    for d in reversed(order):
        if t.shape[d] != 1:
            if t.stride(d) != expected:
                return None
            expected *= t.shape[d]
    return order


def _pack_bits(t: torch.Tensor):
    flat = t.detach().reshape(-1)
    n = flat.numel()
    kernel = BIT_KERNELS.get(flat.device.type)
    if kernel is not None and kernel[0](flat.device, flat.dtype):
        return kernel[1](flat), n
    packed = torch.empty((n + 7) // 8, dtype=torch.uint8, device=t.device)
    for start in range(0, n, _CHUNK_BITS):
        m = min(_CHUNK_BITS, n - start)
        _pack_chunk(flat[start:start + m], packed[start // 8:(start + m + 7) // 8])
    return packed, n


def _unpack_bits(packed, n, shape, dtype):
    kernel = BIT_KERNELS.get(packed.device.type)
    if kernel is not None and kernel[0](packed.device, dtype):
        return kernel[2](packed, n, dtype).view(shape)
    out = torch.empty(n, dtype=dtype, device=packed.device)
    bits = _bits(packed.device)
    for start in range(0, n, _CHUNK_BITS):
        m = min(_CHUNK_BITS, n - start)
        masked = packed[start // 8:(start + m + 7) // 8].unsqueeze(1) & bits  # bit k of byte k
        torch.ne(masked.reshape(-1)[:m], 0, out=out[start:start + m])
    return out.view(shape)


_BITS = {}


def _bits(device):
    if device not in _BITS:
        _BITS[device] = torch.tensor([1 << k for k in range(8)], dtype=torch.uint8, device=device)
    return _BITS[device]


class _Packed:
    """A spike tensor's bits, in the order its values lie in memory (a channels-last tensor is
    packed without a copy and unpacked channels-last)."""

    __slots__ = ("bits", "n", "shape", "dtype", "requires_grad", "order")

    def __init__(self, t):
        self.order = _dense_order(t)
        self.bits, self.n = _pack_bits(t if self.order is None else t.permute(self.order))
        self.shape, self.dtype, self.requires_grad = t.shape, t.dtype, t.requires_grad

    def unpack(self) -> torch.Tensor:
        if self.order is None:
            return _unpack_bits(self.bits, self.n, self.shape, self.dtype)
        order = self.order
        t = _unpack_bits(self.bits, self.n, [self.shape[d] for d in order], self.dtype)
        return t.permute([order.index(d) for d in range(len(order))])


_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class _Bytes:
    __slots__ = ("data", "dtype")

    def __init__(self, data, dtype):
        self.data, self.dtype = data, dtype


def _as_bytes(t: torch.Tensor):
    """`t` as uint8 where that keeps every value bit for bit (integers 0 to 255, no -0),
    else None."""
    t = t.detach()
    u = t.to(torch.uint8)
    as_int = _INT_VIEW[t.element_size()]
    return u if torch.equal(u.to(t.dtype).view(as_int), t.view(as_int)) else None


class packed_spikes(contextlib.ContextDecorator):
    """Stores spike tensors saved for backward with 1 bit per spike (a context manager or a
    decorator).

    Under it, every spike tensor that snnfunc's neurons return (and any view of one) that an
    operation saves for its backward pass is packed into bits (32x less than float32, 16x less
    than float16) and unpacked when the backward pass needs it. The values are 0 and 1, so
    unpacking restores them exactly and the gradients are bit for bit the same as without it.
    Tensors marked with `spike_counts` are stored with one byte per count. Other saved tensors
    are stored as usual.

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

        def pack(t):
            kind = _marked(live, t)
            if kind == "bits":
                p = _Packed(t)
                stats.spike_bytes += p.bits.numel()
                stats.spike_bytes_unpacked += t.numel() * t.element_size()
                return p
            if kind == "bytes":
                u = _as_bytes(t)
                if u is not None:
                    stats.spike_bytes += u.numel()
                    stats.spike_bytes_unpacked += t.numel() * t.element_size()
                    return _Bytes(u, t.dtype)
            if isinstance(t, torch.Tensor) and not _wrapped(t):
                stats.other_bytes += t.untyped_storage().nbytes() if t.numel() else 0
            return t

        def unpack(p):
            if isinstance(p, _Packed):
                return p.unpack()
            if isinstance(p, _Bytes):
                return p.data.to(p.dtype)
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


# --------------------------------------------------------------------------- layers that save less


POOL_KERNELS: dict = {}
"""`MaxPool2d`'s own kernels by device type, which a backend registers (the C backend for
"cpu"): `(runs(t) -> bool, forward(x, k, channels_last) -> (output, offsets), backward(g,
offsets, H, W, k, channels_last) -> the input's gradient)` on tensors checked by the ops
below, all contiguous or all channels-last, following ATen's rules bit for bit. Elsewhere
the ops run ATen's kernels and convert the indices."""


def _is_registered_spike(t: torch.Tensor) -> bool:
    live = _spikes.get()
    return live is not None and _marked(live, t) == "bits"


def _window_base(Ho, Wo, W, k, device):
    """The flat index (in its image plane) of every window's first element, [Ho, Wo]."""
    return (torch.arange(Ho, device=device).view(-1, 1) * (k * W)
            + torch.arange(Wo, device=device) * k)


def _channels_last(t: torch.Tensor) -> bool:
    """Whether `t` [N, C, H, W] is channels-last and not also contiguous (the pool ops' outputs
    are laid out as their input: channels-last, else contiguous)."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _format(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.library.custom_op("snnfunc::window_max_pool2d", mutates_args=())
def _window_max_pool2d(x: torch.Tensor, k: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """max_pool2d of `x` [N, C, H, W], kernel = stride = k (no padding, dilation 1, floor
    mode): the output, and per output the offset dy * k + dx of the chosen element inside its
    window (uint8), ATen's choice among ties and NaN: by a backend's kernel (`POOL_KERNELS`:
    the C backend's for float32 and float64 CPU tensors), else from ATen's own indices, made
    `rows` images at a time (the transient int64 indices of one slice). A channels-last `x`
    is read in place and gives channels-last outputs; any other layout is read from a
    contiguous copy."""
    if x.dim() != 4 or not x.is_floating_point() or not 1 <= k <= 16 or rows < 1:
        raise ValueError("window_max_pool2d takes a 4-d float tensor, 1 <= k <= 16 and rows >= 1")
    cl = _channels_last(x)
    if not cl:
        x = x.contiguous()
    kernel = POOL_KERNELS.get(x.device.type)
    if kernel is not None and kernel[0](x):
        return kernel[1](x, k, cl)
    n, c, H, W = x.shape
    Ho, Wo = H // k, W // k
    out = torch.empty((n, c, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=_format(cl))
    off = torch.empty((n, c, Ho, Wo), dtype=torch.uint8, device=x.device,
                      memory_format=_format(cl))
    base = _window_base(Ho, Wo, W, k, x.device)
    # dy * W + dx -> dy * k + dx, by table (int64 division is scalar, and slow)
    d = torch.arange((k - 1) * W + k, device=x.device)
    table = (torch.div(d, W, rounding_mode="floor") * k + d % W).to(torch.uint8)
    for i in range(0, n, rows):
        o, idx = torch.ops.aten.max_pool2d_with_indices(x[i:i + rows], [k, k], [k, k])
        out[i:i + rows] = o
        off[i:i + rows] = table[idx.sub_(base)]
    return out, off


@_window_max_pool2d.register_fake
def _(x, k, rows):
    shape = (*x.shape[:2], x.shape[2] // k, x.shape[3] // k)
    fmt = _format(_channels_last(x))
    return (torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt),
            torch.empty(shape, dtype=torch.uint8, device=x.device, memory_format=fmt))


@torch.library.custom_op("snnfunc::window_max_pool2d_backward", mutates_args=())
def _window_max_pool2d_backward(g: torch.Tensor, off: torch.Tensor, H: int, W: int, k: int,
                                rows: int) -> torch.Tensor:
    """The gradient of `_window_max_pool2d`'s input: a backend's kernel (`POOL_KERNELS`), or
    ATen's max-pool backward kernel on the int64 indices rebuilt from the offsets, `rows`
    images at a time. Laid out as `off` (channels-last, else contiguous), as the forward's
    input was."""
    if (off.dtype != torch.uint8 or off.dim() != 4 or not 1 <= k <= 16 or rows < 1
            or tuple(off.shape[2:]) != (H // k, W // k) or g.shape != off.shape
            or not g.is_floating_point() or g.device != off.device
            or off.numel() and int(off.max()) >= k * k):
        raise ValueError("window_max_pool2d_backward takes g and uint8 offsets (each < k * k) of "
                         "the pooled shape [N, C, H // k, W // k], 1 <= k <= 16 and rows >= 1")
    cl = _channels_last(off)
    g, off = g.contiguous(memory_format=_format(cl)), off.contiguous(memory_format=_format(cl))
    kernel = POOL_KERNELS.get(g.device.type)
    if kernel is not None and kernel[0](g):
        return kernel[2](g, off, H, W, k, cl)
    n, c, Ho, Wo = off.shape
    gx = torch.empty((n, c, H, W), dtype=g.dtype, device=g.device, memory_format=_format(cl))
    base = _window_base(Ho, Wo, W, k, g.device)
    o = torch.arange(k * k, device=g.device)
    table = torch.div(o, k, rounding_mode="floor") * W + o % k  # dy * k + dx -> dy * W + dx
    for i in range(0, n, rows):
        idx = table[off[i:i + rows].long()].add_(base)
        part = gx[i:i + rows]
        # `self` gives only the input's shape there: the slice being written
        torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
            g[i:i + rows], part, [k, k], [k, k], [0, 0], [1, 1], False, idx, grad_input=part)
    return gx


@_window_max_pool2d_backward.register_fake
def _(g, off, H, W, k, rows):
    return torch.empty((*off.shape[:2], H, W), dtype=g.dtype, device=g.device,
                       memory_format=_format(_channels_last(off)))


def _window_setup(ctx, inputs, output):
    x, k, rows = inputs
    ctx.save_for_backward(output[1])
    ctx.geometry = (x.shape[2], x.shape[3], k, rows)
    ctx.mark_non_differentiable(output[1])


def _window_backward(ctx, g, _):
    (off,) = ctx.saved_tensors
    H, W, k, rows = ctx.geometry
    return torch.ops.snnfunc.window_max_pool2d_backward(g, off, H, W, k, rows), None, None


_window_max_pool2d.register_autograd(_window_backward, setup_context=_window_setup)


class MaxPool2d(torch.nn.Module):
    """`torch.nn.MaxPool2d(k)` (kernel = stride = k) that keeps 1 byte per output for its
    backward pass instead of its input and ATen's int64 indices (for k = 2: 1/4 byte per input
    element instead of 4 + 2 in float32). Forward values and gradients are bit for bit those
    of `torch.nn.MaxPool2d(k)`: ATen's choice among ties and NaN, stored as offsets inside
    their window, and its gradient (0 + g at the chosen element). For float32 and float64 on
    the CPU a C kernel computes both (one pass each; about 3.5x as fast as ATen's forward
    on the spikes of the example's first layer, its backward as fast as ATen's); elsewhere
    ATen's own kernels, the indices converted. A channels-last input is read in place: the
    output, the saved offsets and the input's gradient are channels-last too (no conversion
    between the layers of a channels-last network).

    Under `packed_spikes()`, its output from a spike tensor is a spike tensor too (packed where
    a layer saves it).

    Other inputs than 4-d `[N, C, H, W]` float tensors (3-d `[C, H, W]` is taken as one
    image), and `k` above 16, run `torch.nn.functional.max_pool2d` unchanged.

    Args:
      kernel_size: k, an int (the stride is k too).
      rows: images per slice when the int64 indices are made or rebuilt (their transient
        memory).
    """

    def __init__(self, kernel_size: int, *, rows: int = 64):
        super().__init__()
        for name, v in (("kernel_size", kernel_size), ("rows", rows)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.kernel_size, self.rows = kernel_size, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        plain = (not x.is_floating_point() or x.dim() not in (3, 4) or k > 16
                 or not (torch.is_grad_enabled() and x.requires_grad))
        if plain:
            y = torch.nn.functional.max_pool2d(x, k)
        else:
            one = x.dim() == 3
            y = torch.ops.snnfunc.window_max_pool2d(x.unsqueeze(0) if one else x, k, self.rows)[0]
            y = y.squeeze(0) if one else y
        if not torch.compiler.is_compiling() and _is_registered_spike(x):
            register_spikes(y)
        return y

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def recompute(module: torch.nn.Module, *args):
    """`module(*args)` under `torch.utils.checkpoint` (non-reentrant): nothing the module saves
    for its backward pass is kept; it runs again when the backward pass reaches it. Batch
    norm's running statistics (any buffer of `module`) are left as one plain call leaves them
    (the second run restores them), and the random state is restored for it, so outputs,
    gradients and buffers are bit for bit those of `module(*args)`.

    Worth it where a layer's saved input is alive at the backward pass's peak: for a static
    encoder (Conv-BN computed once per image and fed at every time step) it drops the
    convolution's output that batch norm saves; the encoder runs twice.

    Or around batch norm and the neuron after it (`Sequential(batch_norm, neuron)`): what is
    kept is batch norm's input alone, not also its output (the neuron's input); batch norm and
    the neuron's forward run again, each about one pass over the data.

    Stateful neuron adapters inside `module` (`snnfunc.nn`'s nodes) run again from the state
    they started from, and are left with the state (and the monitor) the forward pass left
    them. Apart from its buffers and those adapters `module` must be pure. Under
    `torch.compile` and without grad mode it is `module(*args)`.

    Example:

            encoder = torch.nn.Sequential(conv, batch_norm)
            x = memory.recompute(encoder, images)
            bn_neuron = torch.nn.Sequential(batch_norm, neuron)
            spikes = memory.recompute(bn_neuron, conv(x_seq))
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return module(*args)
    # the stateful adapters (snnfunc.nn's nodes: `_state_attr` names the attribute that holds
    # a node's state; this floor does not import them)
    nodes = [m for m in module.modules()
             if isinstance(getattr(type(m), "_state_attr", None), str)]
    calls = []

    def run(*a):
        if not calls:  # the forward: the states the adapters start from
            calls.append([getattr(m, m._state_attr) for m in nodes])
            return module(*a)
        kept = [b.clone() for b in module.buffers()]
        left = [(getattr(m, m._state_attr),
                 m.monitor and {k: len(v) for k, v in m.monitor.items()}) for m in nodes]
        for m, start in zip(nodes, calls[0]):
            setattr(m, m._state_attr, start)
        try:  # the recomputation (stopped early by checkpoint once it has what it needs)
            return module(*a)
        finally:
            with torch.no_grad():
                for b, v in zip(module.buffers(), kept):
                    b.copy_(v)
            for m, (state, lengths) in zip(nodes, left):
                setattr(m, m._state_attr, state)
                for k, n in (lengths or {}).items():
                    del m.monitor[k][n:]

    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)
