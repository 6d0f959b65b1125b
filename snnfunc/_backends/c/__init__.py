"""The C backend: kernels for the CPU, generated as C and built with the system C compiler
(`build`), launched through ctypes (`host`). Its spelling of the operations is `spelling`,
its kernels' skeletons `skeleton`, its runtime the header files in `runtime/`. Registered for
the device type "cpu", its max-pool (`pool`) for `snnfunc.memory.MaxPool2d` there, its
packing of spikes into bits (`bits`) for `snnfunc.memory.packed_spikes`, and its products of
mostly-zero inputs (`spike_linear`) for `snnfunc.sparse.SpikeLinear`."""

from snnfunc import memory, sparse
from snnfunc._backends.c import bits, build, host, pool, spike_linear
from snnfunc._kernel import backends

_BACKEND = backends.Backend(
    "c", lambda: (host.defined_forward, host.defined_backward, host.forward_fn, host.backward_fn),
    build.error, direct=True,
    steppers=lambda: (host.forward_stepper, host.backward_stepper),
    runners=lambda: (host.forward_runner, host.backward_runner))
backends.register("cpu", _BACKEND)
# loaded now (its ops are registered already, by host's import): a first neuron call traced by
# torch.compile would otherwise load it, guard on it not being loaded, and compile again on
# the next call
_BACKEND.forward  # noqa: B018
memory.POOL_KERNELS["cpu"] = (pool.runs, pool.forward, pool.backward)
memory.BIT_KERNELS["cpu"] = (bits.runs, bits.pack, bits.unpack)
sparse.KERNELS["cpu"] = (spike_linear.runs, spike_linear.forward, spike_linear.weight_grad)
sparse.STEPPERS["cpu"] = spike_linear.stepper
