"""snnfunc: spiking neurons as pure, time-unrolled functions for PyTorch."""

from snnfunc import _backends  # noqa: F401  (the backends register their kernels' ops)
from snnfunc import functional, memory, nn, recurrent, sparse, surrogate
from snnfunc._info import info
from snnfunc.definition import (DefinitionError, Neuron, StatesOutput, StatesOutputWithH,
                                StepStatesOutput, StepStatesOutputWithH, TraceOutput, neuron)
from snnfunc.functional import *  # noqa: F401,F403
from snnfunc.functional import __all__ as _functional_all
from snnfunc.recurrent import rnn

__version__ = "0.1.0"

__all__ = ["functional", "memory", "sparse", "surrogate", "nn", "nir", "recurrent", "rnn", "info",
           "neuron", "Neuron", "DefinitionError", "StatesOutput", "StatesOutputWithH",
           "TraceOutput", "StepStatesOutput", "StepStatesOutputWithH", *_functional_all]


def __getattr__(name):  # PEP 562: snnfunc.nir on first use (it needs the optional nir package)
    if name == "nir":
        import importlib

        return importlib.import_module("snnfunc.nir")
    raise AttributeError(f"module 'snnfunc' has no attribute {name!r}")
