"""Findings sentences that depend on the device: a traced GPU run whose time is mostly outside any op is
flagged as paced by the host (measured on an H100, docs/benchmarks.md); a CPU run or a GPU run that is not is not."""

import pytest

from diffprobe.analyses.findings import profile_findings


def _run(device: str, unattributed: float, total: float = 1.0) -> dict:
    return {"device": device, "seconds": {"total": total, "by_layer_type": {"conv": total - unattributed,
                                                                          "unattributed": unattributed}}}


@pytest.mark.parametrize("device, unattributed, flagged", [
    ("cuda", 0.7, True), ("cuda:0", 0.3, True), ("cuda", 0.2, False), ("cpu", 0.7, False),
])
def test_host_bound_gpu_runs_are_flagged(device, unattributed, flagged):
    text = " ".join(profile_findings(_run(device, unattributed)))
    assert f"{100 * unattributed:.1f}% of the measured time is not attributed" in text
    assert ("the device waited on the host" in text) is flagged
