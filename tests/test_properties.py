"""Property tests over shapes, options and dtypes (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NEURONS, call, call_step, ref_loop

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(NEURONS))
    T = draw(st.integers(0, 6))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    v_reset = draw(st.sampled_from([0.0, -0.3, None]))
    detach = draw(st.booleans())
    decay = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    pshape = draw(st.sampled_from(["float", "scalar", "last"]))
    return kind, T, shape, dtype, v_reset, detach, decay, seed, pshape


def _kw(kind, v_reset, detach, decay):
    kw = dict(v_reset=v_reset, detach_reset=detach)
    if kind in ("lif", "plif"):
        kw["decay_input"] = decay
    return kw


@settings(max_examples=80, deadline=None)
@given(cases())
def test_multi_step_equals_step_loop_and_reference(case):
    kind, T, shape, dtype, v_reset, detach, decay, seed, pshape = case
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((T, *shape), generator=g) * 1.6).to(dtype)
    base = {"if": None, "lif": 2.0, "plif": 0.5, "rif": -0.1}[kind]
    if base is None or pshape == "float":
        p = base
    elif pshape == "scalar":
        p = torch.tensor(base, dtype=dtype)
    else:
        p = (base + 0.1 * torch.rand(shape[-1:], generator=g)).to(dtype)
    kw = _kw(kind, v_reset, detach, decay)
    out = call(kind, x, None, p, return_h=True, **kw)
    assert out.spikes.shape == x.shape and out.h.shape == x.shape and out.v.shape == shape
    # half precision is computed in float32 and its state held in float32
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    assert out.spikes.dtype == dtype and out.v.dtype == compute
    assert bool(((out.spikes == 0) | (out.spikes == 1)).all())
    # the spec: a spike exactly where H reaches the threshold (half precision returns H
    # rounded from the float32 H it fired on: a spike's H may round across the threshold)
    if compute == dtype:
        assert torch.equal(out.spikes, (out.h - 1.0 >= 0).to(dtype))
    v = None
    for t in range(T):
        s, v = call_step(kind, x[t], v, p, **kw)
        assert torch.equal(s, out.spikes[t])
    if T:
        assert torch.equal(v, out.v)
    rest = 0.0 if v_reset is None else v_reset
    pc = p.to(compute) if isinstance(p, torch.Tensor) else p
    ref = ref_loop(kind, x.to(compute), torch.full(shape, rest, dtype=compute), pc,
                   v_reset=v_reset, detach_reset=detach, decay_input=decay)
    assert torch.equal(out.spikes.to(compute), ref[0])
