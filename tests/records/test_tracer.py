"""The tracer against hand counts from layer shapes, across attention backends and between modes."""

import pandas as pd
import pytest

import diffprobe
from diffprobe.models.registry import get_spec
from diffprobe.records.formulas import FORMULAS
from diffprobe.records.runfolder import read_ops
from diffprobe.records.schema import LAYER_TYPES, STAGES
from diffprobe.run.profile import ProfileConfig, build_pipeline, run_profile
from tests.reference.flops import unet_costs

TYPES = ("conv", "attn_qkv", "attn_out", "ffn", "linear", "embedding")


def _unet_step0(ops: pd.DataFrame) -> pd.DataFrame:
    return ops[(ops["stage"] == "denoiser") & (ops["step"] == 0)]


def _check_against_reference(unet: pd.DataFrame, ref) -> None:
    macs = unet.groupby("layer_type")["macs_conv_linear"].sum()
    for lt in TYPES:
        assert macs.get(lt, 0) == ref[lt], lt
    flops = unet.groupby("layer_type")["flops"].sum()
    n_scores = ref["scores_self"] + ref["scores_cross"]
    assert flops["attn_score"] == 2 * ref["attn_score"] + n_scores  # products + the 1/sqrt(d) scale
    assert flops["attn_pv"] == 2 * ref["attn_pv"]
    assert flops["attn_softmax"] == 5 * n_scores
    by_kind = unet[unet["layer_type"] == "attn_softmax"].groupby("attn_kind")["flops"].sum()
    assert by_kind["self"] == 5 * ref["scores_self"] and by_kind["cross"] == 5 * ref["scores_cross"]


def test_tiny_unet_matches_hand_count(tmp_path):
    r = run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", out=str(tmp_path)))
    ref = unet_costs([32, 64, 64, 64], [1, 1, 1, 0], heads=2, ctx=32, latent_hw=(8, 8), batch=2, layers=1)
    _check_against_reference(_unet_step0(r.ops), ref)


@pytest.mark.slow
def test_sd15_unet_at_512_matches_hand_count(tmp_path):
    r = run_profile(ProfileConfig(model="sd15", steps=1, mode="analytic", out=str(tmp_path)))
    ref = unet_costs([320, 640, 1280, 1280], [1, 1, 1, 0], heads=8, ctx=768, latent_hw=(64, 64), batch=2)
    _check_against_reference(_unet_step0(r.ops), ref)
    # and the literature convention for the whole UNet step is exactly the sum of conv + linear MACs
    assert _unet_step0(r.ops)["macs_conv_linear"].sum() == sum(ref[t] for t in TYPES)


@pytest.mark.slow
def test_sd21_linear_projection_and_head_counts(tmp_path):
    r = run_profile(ProfileConfig(model="sd21-base", steps=1, mode="analytic", height=256, width=256,
                                  out=str(tmp_path)))
    ref = unet_costs([320, 640, 1280, 1280], [1, 1, 1, 0], heads=[5, 10, 20, 20], ctx=1024, latent_hw=(32, 32),
                     batch=2, linear_proj=True)
    _check_against_reference(_unet_step0(r.ops), ref)


def _measured_unet_attention(tmp_path, name, setup):
    cfg = ProfileConfig(model="tiny", steps=1, sample_steps=0, out=str(tmp_path / name)).resolved()
    pipe = build_pipeline(cfg, get_spec("tiny"))
    with setup(pipe):
        ops = run_profile(cfg, pipe=pipe).ops
    unet = _unet_step0(ops)
    return unet[unet["layer_type"].str.startswith("attn")].groupby(["layer_type", "attn_kind"])["flops"].sum()


@pytest.mark.slow
def test_attention_flops_identical_across_backends_and_classic_processor(tmp_path):
    import contextlib

    from diffusers.models.attention_processor import AttnProcessor
    from torch.nn.attention import SDPBackend, sdpa_kernel

    @contextlib.contextmanager
    def classic(pipe):
        pipe.unet.set_attn_processor(AttnProcessor())  # baddbmm -> softmax -> bmm
        yield

    default = _measured_unet_attention(tmp_path, "default", lambda p: contextlib.nullcontext())
    math = _measured_unet_attention(tmp_path, "math", lambda p: sdpa_kernel(SDPBackend.MATH))
    old = _measured_unet_attention(tmp_path, "classic", classic)
    assert default.to_dict() == math.to_dict() == old.to_dict()
    assert default[("attn_score", "self")] > 0 and default[("attn_pv", "cross")] > 0


def test_analytic_records_equal_measured_records(tmp_path):
    run = dict(model="tiny", steps=3, sample_steps=0)
    measured = run_profile(ProfileConfig(mode="measured", out=str(tmp_path / "m"), **run)).ops
    analytic = run_profile(ProfileConfig(mode="analytic", out=str(tmp_path / "a"), **run)).ops
    assert len(measured) == len(analytic)
    # host->device copies exist only where the device is not the host (meta here): the rest is identical
    transfer = (analytic["layer_type"] == "transfer").to_numpy()
    assert (measured.loc[transfer, "layer_type"] == "view").all()
    cols = ["op", "part", "stage", "step", "module", "level", "tokens", "layer_type", "attn_kind", "input_shapes",
            "output_shapes", "flops", "macs_conv_linear", "bytes_read", "bytes_written", "bytes_read_unfused",
            "bytes_written_unfused"]
    pd.testing.assert_frame_equal(measured.loc[~transfer, cols].reset_index(drop=True),
                                  analytic.loc[~transfer, cols].reset_index(drop=True))
    assert measured["time_s"].notna().all() and analytic["time_s"].isna().all()
    assert analytic["replayed"].sum() == 2 * len(_unet_step0(analytic))  # steps 1 and 2 replayed


@pytest.mark.slow
def test_replayed_unet_records_equal_traced_ones(tmp_path, monkeypatch):
    from diffprobe.run import analytic as analytic_mode

    run = dict(model="tiny", steps=2, mode="analytic")
    replayed = run_profile(ProfileConfig(out=str(tmp_path / "r"), **run)).ops
    original = analytic_mode.MetaAdapters.__init__
    monkeypatch.setattr(analytic_mode.MetaAdapters, "__init__",
                        lambda self, pipe, tracer, replay=True, plan=None: original(self, pipe, tracer,
                                                                                    replay=False, plan=plan))
    traced = run_profile(ProfileConfig(out=str(tmp_path / "t"), **run)).ops
    assert not traced["replayed"].any() and replayed["replayed"].any()
    cols = [c for c in traced.columns if c not in ("index", "replayed", "time_s")]
    pd.testing.assert_frame_equal(traced[cols], replayed[cols])


def test_measured_seconds_sum_to_stage_time_with_unattributed_shown(tmp_path):
    d = diffprobe.profile(model="tiny", steps=2, sample_steps=0, out=str(tmp_path)).to_dict()
    secs = d["seconds"]
    for stage in ("text_encoder", "denoiser", "vae_decoder"):
        parts = secs["by_stage_layer_type"][stage]
        assert parts["unattributed"] >= 0
        assert sum(parts.values()) == pytest.approx(d["stages"][stage], rel=1e-9)
    assert secs["by_layer_type"]["conv"] > 0


def test_json_account_shapes(tmp_path):
    d = diffprobe.profile(model="tiny", steps=2, mode="analytic", out=str(tmp_path)).to_dict()
    for key in ("flops", "bytes"):
        acc = d[key]
        assert set(acc) >= {"total", "by_stage", "by_layer_type", "by_stage_layer_type", "by_level"}
        assert acc["total"] == sum(acc["by_stage"].values()) == sum(acc["by_layer_type"].values())
        assert sum(acc["by_level"].values()) == acc["by_stage"]["denoiser"]
    assert d["macs_conv_linear"]["denoiser"] * 2 < d["flops"]["by_stage"]["denoiser"]  # the convention leaves work out
    assert d["bytes_unfused_total"] > d["bytes"]["total"]  # fused attention never writes its scores
    ops = read_ops(tmp_path)
    assert ops["flops"].sum() == d["flops"]["total"]
    assert set(ops["layer_type"]) <= set(LAYER_TYPES) and set(ops["stage"]) <= set(STAGES)
    import pyarrow.parquet as pq

    from diffprobe.records.schema import OPS_VERSION, VERSIONS

    version = pq.read_schema(tmp_path / "ops.parquet").metadata[b"diffprobe_schema_version"]
    # a version per document (issue 12): the record table's, and run.json's own
    assert version == str(OPS_VERSION).encode() and d["schema_version"] == VERSIONS["profile"]
    import pyarrow as pa

    assert pq.read_schema(tmp_path / "ops.parquet").field("input_shapes").type.equals(pa.list_(pa.list_(pa.int64())))


def test_op_without_formula_is_listed_not_dropped(tmp_path, monkeypatch):
    monkeypatch.delitem(FORMULAS, "silu")
    d = diffprobe.profile(model="tiny", steps=1, mode="analytic", out=str(tmp_path)).to_dict()
    assert any("aten.silu.default" in w for w in d["warnings"])
    ops = read_ops(tmp_path)
    silu = ops[ops["op"] == "aten.silu.default"]
    assert len(silu) > 0 and (silu["layer_type"] == "other").all() and (silu["flops"] == 0).all()


def test_token_counts_per_level(tmp_path):
    r = run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", height=128, width=64, out=str(tmp_path)))
    tokens = _unet_step0(r.ops).groupby("level")["tokens"].first().to_dict()
    assert tokens["down.0"] == 16 * 8 and tokens["down.1"] == 8 * 4 and tokens["mid"] == 2 * 1
    assert tokens["up.3"] == 16 * 8 and tokens["up.0"] == 2 * 1


def test_an_interrupt_inside_torchs_mode_stack_is_reported_as_the_interrupt(tmp_path):
    """A SIGTERM or Ctrl-C that lands inside torch's own pop-and-push of the torch-function mode stack (a functional
    call under the tracer's SDPA intercept) leaves the stack one mode short; leaving the tracer then must let the
    interrupt through (and undo its patches), not replace it with "trying to pop from empty mode stack". Without an
    interrupt that error still surfaces."""
    import torch
    from torch.overrides import _pop_mode

    from diffprobe.errors import Terminated
    from diffprobe.run.passes import tracer_for

    cfg = ProfileConfig(model="tiny", steps=1, sample_steps=0, out=str(tmp_path / "o")).resolved()
    pipe = build_pipeline(cfg, get_spec("tiny"))
    step = pipe.scheduler.step
    for interrupt in (Terminated, None):
        tracer = tracer_for(cfg, pipe, timed=False)
        with pytest.raises(Terminated if interrupt else RuntimeError, match=None if interrupt else "empty mode stack"):
            with tracer:
                _pop_mode()  # where the signal left it: the tracer's SDPA intercept already taken off the stack
                if interrupt:
                    raise interrupt()
        assert pipe.scheduler.step == step  # patches undone either way
        assert not torch.overrides._is_torch_function_mode_enabled()


def test_the_sdpa_intercept_alone_lets_an_interrupt_through():
    """The same guard where the attention cores enter the SDPA intercept themselves (approx, sparsity runs)."""
    from torch.overrides import _pop_mode

    from diffprobe.errors import Terminated
    from diffprobe.records.sdpa import SdpaIntercept

    with pytest.raises(Terminated):
        with SdpaIntercept(lambda func, args, kwargs: func(*args, **kwargs)):
            _pop_mode()
            raise Terminated()
    with pytest.raises(RuntimeError, match="empty mode stack"):
        with SdpaIntercept(lambda func, args, kwargs: func(*args, **kwargs)):
            _pop_mode()
