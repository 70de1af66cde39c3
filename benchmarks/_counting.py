"""Counting the Gaussian closure's Newton work in benchmarks."""

from __future__ import annotations

import kernelfield.theory.closure as closure


class NewtonCounter:
    """Counts Newton steps and Hessian-vector products of :func:`.closure.maximise_closure` while
    in a ``with`` block, by wrapping :func:`.newton.steihaug_newton` as the closure calls it."""

    def __init__(self):
        self.newton = self.products = 0

    def reset(self) -> None:
        self.newton = self.products = 0

    def __enter__(self) -> "NewtonCounter":
        self._original = closure.steihaug_newton
        closure.steihaug_newton = self
        return self

    def __exit__(self, *exc) -> None:
        closure.steihaug_newton = self._original

    def __call__(self, hessian_vector, *rest, **kwargs):
        self.newton += 1

        def product(v):
            self.products += 1
            return hessian_vector(v)

        return self._original(product, *rest, **kwargs)
