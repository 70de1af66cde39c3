"""Compiled XLA programs of a long-lived process: :func:`release_programs_if_crowded`.

Every XLA CPU executable holds memory mappings of its own (code and constants), and JAX keeps
every program it compiled for as long as the jitted function lives. A process that compiles
thousands of programs (a sweep or a study over many shapes, a test session) reaches the kernel's
limit on mappings (Linux: ``vm.max_map_count``, 65,530 by default) and then crashes inside the
compiler with a segmentation fault (seen in the test suite: the core dump of a crashed pytest
worker held 65,473 mappings). Long loops call :func:`release_programs_if_crowded` between their
units of work; freeing costs only the recompilation of programs used again.
"""

from __future__ import annotations

import jax

__all__ = ["MAPPING_BUDGET", "release_programs_if_crowded"]

#: Memory mappings a process may hold before it frees its compiled programs: about a third of
#: Linux's default limit (``vm.max_map_count`` = 65,530).
MAPPING_BUDGET = 20_000


def release_programs_if_crowded(budget: int | None = None) -> bool:
    """Free this process's compiled XLA programs (``jax.clear_caches``) when it holds more than
    ``budget`` memory mappings (default :data:`MAPPING_BUDGET`; counted on Linux only). Returns
    whether it freed them."""
    try:
        with open("/proc/self/maps") as maps:
            mappings = sum(1 for _ in maps)
    except OSError:  # not Linux
        return False
    if mappings <= (MAPPING_BUDGET if budget is None else budget):
        return False
    jax.clear_caches()
    return True
