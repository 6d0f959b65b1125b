"""Fused kernels generated from neuron definitions (see `snnfunc.definition`)."""

from __future__ import annotations


def run(neuron, x_seq, states, params, opts, *, v_threshold, v_reset, surrogate, detach_reset,
        return_h, force):
    if force:
        raise ValueError("impl='fused' is not available: no generated kernel yet")
    return None
