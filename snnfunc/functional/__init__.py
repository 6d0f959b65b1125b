"""Pure neuron functions over explicit state; see `snnfunc.functional.neurons`."""

from snnfunc.functional.neurons import (
    NeuronOutput,
    NeuronOutputWithH,
    StepOutput,
    StepOutputWithH,
    if_,
    if_step,
    lif,
    lif_step,
    plif,
    plif_step,
    rif,
    rif_step,
)

__all__ = [
    "NeuronOutput",
    "NeuronOutputWithH",
    "StepOutput",
    "StepOutputWithH",
    "if_",
    "if_step",
    "lif",
    "lif_step",
    "plif",
    "plif_step",
    "rif",
    "rif_step",
]
