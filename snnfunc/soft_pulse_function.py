"""SpikingFlow's name for `snnfunc.surrogate` ("soft pulse functions"); the same module."""

import sys

from snnfunc import surrogate as _surrogate

sys.modules[__name__] = _surrogate
