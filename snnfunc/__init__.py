"""snnfunc: spiking neurons as pure, time-unrolled functions for PyTorch."""

from snnfunc import _backends  # noqa: F401  (the backends register their kernels' ops)
from snnfunc import functional, memory, surrogate
from snnfunc.functional import *  # noqa: F401,F403
from snnfunc.functional import __all__ as _functional_all

from snnfunc import recurrent
from snnfunc.recurrent import rnn
from snnfunc._info import info
from snnfunc.definition import (DefinitionError, Neuron, StatesOutput, StatesOutputWithH,
                                StepStatesOutput, StepStatesOutputWithH, TraceOutput, neuron)

__version__ = "0.1.0"

__all__ = ["functional", "memory", "surrogate", "recurrent", "rnn", "info", "neuron", "Neuron",
           "DefinitionError",
           "StatesOutput", "StatesOutputWithH", "TraceOutput", "StepStatesOutput",
           "StepStatesOutputWithH",
           *_functional_all]
