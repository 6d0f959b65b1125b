"""Pure neuron functions over explicit state; see `snnfunc.functional.neurons`."""

from snnfunc.definition import CALL, FIRE
from snnfunc.functional import defined, neurons

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
from snnfunc.functional.defined import (
    ALIFState,
    CubaLIFState,
    alif,
    alif_step,
    cuba_lif,
    cuba_lif_step,
    eif,
    eif_step,
    qif,
    qif_step,
)



def definition_of(fn):
    """`(Neuron, keyword defaults, adapt)` when `fn` is one of the library's neuron functions
    (`snnfunc.lif`, ...) or a `Neuron` (made with `snnfunc.neuron`), else None: the definition
    the function runs, the defaults of the function's own keywords (those the definition does
    not take, such as PLIF's `parametrization`), and `adapt(kwargs)` (or None), which turns
    the function's keyword arguments into the definition's. For layers built on neurons, such
    as `snnfunc.rnn`. (A table made once, never written: torch.compile guards on nothing.)"""
    from snnfunc.definition import Neuron

    if isinstance(fn, Neuron):
        return fn, {}, None
    try:
        return _TABLE.get(fn)
    except TypeError:  # an unhashable callable
        return None


def _own_defaults(fn, nrn):
    import inspect

    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
            and n not in (*nrn.parameters, *nrn.options, *FIRE, *CALL)}


def _plif_adapt(kw):
    kw = dict(kw)
    kw["w"] = neurons.plif_k(kw.get("w"), kw.pop("parametrization", "reciprocal"))
    return kw


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
    "CubaLIFState",
    "ALIFState",
    "cuba_lif",
    "cuba_lif_step",
    "alif",
    "alif_step",
    "qif",
    "qif_step",
    "eif",
    "eif_step",
]


_TABLE = {}
for _module in (neurons, defined):
    for _kind, _definition in _module.DEFINITIONS.items():
        _fn = getattr(_module, "if_" if _kind == "if" else _kind)
        _TABLE[_fn] = (_definition, _own_defaults(_fn, _definition),
                       _plif_adapt if _fn is neurons.plif else None)
del _module, _kind, _definition, _fn
