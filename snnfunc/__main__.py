"""`python -m snnfunc`: the installation report of `snnfunc.info()`."""

from snnfunc import info

info()
