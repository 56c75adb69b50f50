"""Key-padding masks: the sparsity probe leaves masked keys out of its statistics."""

import pytest

# -- 12. composites apart ------------------------------------------------------------------------------------------


# -- 15. masked keys are not sparsity ------------------------------------------------------------------------------
def test_sparsity_leaves_masked_keys_out():
    import torch

    from diffprobe.attention.core import CallInfo
    from diffprobe.attention.probe import SparsityConfig, SparsityProbe

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, 4, 8, generator=g) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 16)
    k, v = torch.randn(2, 1, 16, 8, generator=g), torch.randn(2, 1, 16, 8, generator=g)
    mask[0, ..., 1:] = -10000.0  # the unconditional branch: one real key
    mask[1, ..., 5:] = -10000.0  # the prompt: five
    probe = SparsityProbe(SparsityConfig(eps=(1e-3,), taus=(0.9,), blocks=(4,)))
    call = CallInfo(name="layer", kind="cross", level="block.0", step=0, heads=1, q_tokens=4, k_tokens=16)
    probe.core(q, k, v, mask, call)
    rows = {r["k_tokens"]: r for r in probe.rows}
    assert set(rows) == {1, 5} and rows[5]["keys_masked"] == 11
    # independent: the five-key branch's probabilities in float64, no mask
    p = torch.softmax(q[1].double() @ k[1, :, :5].double().transpose(-1, -2) / 8 ** 0.5, dim=-1)
    assert rows[5]["below_0.001"] == pytest.approx(float((p < 1e-3).double().mean()))
    assert rows[1]["below_0.001"] == 0.0  # main counted its 15 masked keys: 15/16 below every eps
