from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from kernelfield import plots


def _kernel(n, seed):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T / n


def test_plot_kernels_three_panels_shared_scale(tmp_path):
    T, P = 3, 2
    C1, C2 = _kernel(6, 0), _kernel(6, 1)
    fig = plots.plot_kernels(C1, C2, T, P, tmp_path / "k.png", title="t")
    assert isinstance(fig, Figure)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert images[0].get_clim() == images[1].get_clim()
    np.testing.assert_allclose(images[2].get_array(), C2 - C1)
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_kernels_single_and_layout_check(tmp_path):
    fig = plots.plot_kernels(_kernel(6, 0).reshape(3, 2, 3, 2), None, 3, 2)
    assert sum(1 for ax in fig.axes if ax.images) == 1
    with pytest.raises(ValueError, match="^C_sampled:"):
        plots.plot_kernels(_kernel(6, 0), _kernel(4, 0), 3, 2)


def test_plot_block_errors(tmp_path):
    cmp = SimpleNamespace(block_error=np.random.default_rng(0).random((3, 3)), block_error_bar=np.full((3, 3), 0.01), N=16)
    fig = plots.plot_block_errors(cmp, tmp_path / "b.png")
    assert isinstance(fig, Figure) and (tmp_path / "b.png").stat().st_size > 0
