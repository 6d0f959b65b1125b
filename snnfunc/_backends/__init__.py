"""The kernel backends: each a folder with its spelling of the IR's operations, the skeletons
of its kernels and its host code, registered for a device type in `snnfunc._kernel.backends`."""

from snnfunc._backends import c, triton  # noqa: E402,F401  (each registers itself)
