"""Marks for `torch.compile` that do not import `torch._dynamo` (over a second) when snnfunc
is imported: it is imported when something compiles."""

from __future__ import annotations

import torch


def constant_result(fn):
    """`torch.compiler.assume_constant_result(fn)`: the mark it sets on `fn` (tests/test_info.py
    checks that torch sets the same one)."""
    fn._dynamo_marked_constant = True
    return fn


def not_compiled(fn):
    """`torch.compiler.disable(fn)`, with Dynamo imported on the first call."""
    return torch._disable_dynamo(fn)
