"""Counts at the limits of the record table: totals past 64-bit integers are refused, large sizes stay exact."""

import diffprobe
from tests.cli_checks import one_line_error as _one_line_error


# -- High ---------------------------------------------------------------------------------------------------------
def test_flop_totals_that_overflow_int64_are_refused_not_wrapped(tmp_path, capsys):
    # sd15 at 50000 px, one step: self-attention alone is ~1e19 FLOPs, past 2^63 - 1 (main printed negative counts)
    _one_line_error(capsys, ["profile", "--model", "sd15", "--mode", "analytic", "--height", "50000", "--width",
                             "50000", "--steps", "1", "--out", str(tmp_path / "o"), "-q"], "64-bit")


def test_counts_stay_exact_at_large_sizes(tmp_path):
    # tiny at 4096 and 8192 px (latent 512² and 1024² tokens): the attention-score FLOPs of one evaluation grow
    # exactly 16x when the side doubles (2·N²·d + N² scale multiplies, N = tokens), as integers
    def score(side):
        r = diffprobe.profile(model="tiny", steps=1, mode="analytic", height=side, width=side,
                              out=str(tmp_path / str(side)))
        ops = r.ops
        sel = (ops["stage"] == "denoiser") & (ops["layer_type"] == "attn_score") & (ops["attn_kind"] == "self")
        return int(ops.loc[sel, "flops"].sum())

    a, b = score(4096), score(8192)
    assert b == 16 * a and a > 0
