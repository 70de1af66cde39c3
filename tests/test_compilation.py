"""Freeing compiled programs in long-lived processes (kernelfield.compilation)."""

import jax

from kernelfield.compilation import release_programs_if_crowded


def test_a_crowded_process_frees_its_compiled_programs():
    """Above its budget of memory mappings a process frees its compiled programs (each XLA
    executable holds mappings; at the kernel's limit the compiler segfaults); below it keeps them."""
    add_one = jax.jit(lambda x: x + 1.0)
    add_one(1.0)
    assert not release_programs_if_crowded(budget=10**9)
    assert add_one._cache_size() == 1
    assert release_programs_if_crowded(budget=0)
    assert add_one._cache_size() == 0
