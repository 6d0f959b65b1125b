"""The call record: everything about one call of the kernels that is not a tensor (hashable:
`torch.compile` guards on it), and its codec, the strings the ops carry."""

from __future__ import annotations

import dataclasses

import torch

DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
          torch.bfloat16: "bfloat16"}
"""The dtypes the kernels take, by name (half precision computed in float32)."""


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """The non-tensor part of one call of a neuron's kernels.

    Attributes:
      neuron: the registered definition's name.
      options: the definition's options, `options_string`.
      hard: hard reset (else soft).
      detach: `detach_reset`.
      want_h: the forward returns h, the membrane before reset, at every step.
      surrogate: the surrogate's token (`snnfunc._kernel.surrogates`).
      n_states: how many states the neuron has.
      want_states: the forward returns the states after every step.
      sg_in_torch: the surrogate's derivative is computed in torch, not compiled in.
      keep: where the backend keeps forward values for its backward (`Backend.keeps`) and a
        gradient is wanted: the gradients (`need`) the forward keeps them for; else None.
    """

    neuron: str
    options: str
    hard: bool
    detach: bool
    want_h: bool
    surrogate: str
    n_states: int
    want_states: bool = False
    sg_in_torch: bool = False
    keep: tuple | None = None


def options_string(opts: dict) -> str:
    """The options as the ops carry them: `name=0,name=1`, sorted."""
    return ",".join(f"{k}={int(v)}" for k, v in sorted(opts.items()))


def parse_options(neuron, text: str) -> dict:
    """The options an op was given, checked against the definition's."""
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


def shared(params, th) -> tuple:
    """For each parameter and then the threshold: one value shared by every neuron."""
    return tuple(t.numel() == 1 for t in (*params, th))


def step_tensor(t, x, step=None):
    """A step tensor as the kernels take it: one shared value, or [*S] like one step of x
    (`step`: x.shape[1:], where the caller has it); t itself where it is one already."""
    step = x.shape[1:] if step is None else step
    if t.numel() == 1:
        return t if t.dim() == 0 else t.reshape(())
    return t if t.shape == step else t.expand(step)
