"""Experiments built on the theory and the finite-width networks.

Each module here combines :func:`kernelfield.solve`, :func:`kernelfield.prior_kernel` and
:func:`kernelfield.sample` into one study (phase transition, sequential generalisation) and
returns labelled results (xarray) that :mod:`kernelfield.plots` draws and
:mod:`kernelfield.storage` writes.
"""
