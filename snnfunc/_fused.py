"""Fused multi-step kernels (placeholder: none registered yet, every call takes the reference)."""


def supported(x_seq, v, p, v_threshold, *, force):
    if force:
        raise ValueError("impl='fused' is not available in this build; use impl='auto'")
    return False
