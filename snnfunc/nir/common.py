"""What export and import share: the optional `nir` package and the check of the Euler step."""

from __future__ import annotations

import math
import numbers


def _nir():
    try:
        import nir
    except ImportError as err:  # pragma: no cover - exercised only without nir
        raise ImportError(
            "snnfunc.nir needs the 'nir' package: pip install \"snnfunc[nir]\" (or pip install nir)"
        ) from err
    return nir


def _check_dt(dt) -> float:
    if not isinstance(dt, numbers.Real) or isinstance(dt, bool) or not dt > 0 or not math.isfinite(dt):
        raise ValueError(f"dt must be a positive finite number (the Euler step), got {dt!r}")
    return float(dt)
