"""Compiled runs: kernels of torch.compile'd graphs attributed to the eager records, on synthetic inputs with known
answers and on a real Inductor build of ``tiny``."""

import math

import pytest

import diffprobe
from diffprobe.cli import main
from diffprobe.records.schema import OpRecord
from diffprobe.timing.compiled import (
    CALL_PREFIX,
    GraphCall,
    Kernel,
    apply,
    attribute,
    family,
    graph_calls,
    kernel_name,
    kernels_of,
    module_path,
)
from diffprobe.timing.kernels import Event

pytestmark = pytest.mark.compile  # Inductor compiles (seconds each; a C++ compiler needed)


def test_names_paths_and_families():
    assert module_path("L['self'].__dict__['_modules']['down_blocks'].0.resnets.0.conv1") == \
        "down_blocks.0.resnets.0.conv1"
    assert module_path("L['self']._modules['conv_in']") == "conv_in"
    assert module_path("L['self']") == ""
    assert kernel_name("extern_kernels.mm:16") == kernel_name("aten::mm") == "mm"
    assert kernel_name("graph_3_cpp_fused_silu_2") == kernel_name("cpp_fused_silu_2:5") == "cpp_fused_silu_2"
    assert kernel_name("torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default:19") == \
        "_scaled_dot_product_flash_attention_for_cpu"
    assert [family(n) for n in ("aten.conv2d.default", "convolution_3", "aten.linear.default", "addmm_2", "sdpa",
                                "_scaled_dot_product_flash_attention_for_cpu", "var_mean", "aten.silu.default")] == \
        ["conv", "conv", "mm", "mm", "attention", "attention", "pointwise", "pointwise"]


def test_kernels_in_launch_order_with_their_modules():
    mapping = {
        "cppCodeToPost": {"extern_kernels.mm:3": ["mm"], "cpp_fused_add_native_group_norm_0:1": ["var_mean", "add"],
                          "extern_kernels.convolution:2": ["convolution"]},
        "postToPre": {"mm": ["linear"], "var_mean": ["group_norm"], "add": ["add_1"], "convolution": ["conv2d"]},
    }
    nodes = {"linear": "blocks.0.to_q", "group_norm": "blocks.0.norm", "add_1": None, "conv2d": "conv_in"}
    ks = kernels_of(mapping, nodes, "unet")
    assert ks == [
        Kernel("cpp_fused_add_native_group_norm_0", False, frozenset({"unet.blocks.0.norm", "unet"}),
               frozenset({"pointwise"})),
        Kernel("convolution", True, frozenset({"unet.conv_in"}), frozenset({"conv"})),
        Kernel("mm", True, frozenset({"unet.blocks.0.to_q"}), frozenset({"mm"})),
    ]


def _call(key, start, end):
    return Event("op", f"{CALL_PREFIX}{key} ##", start, end)


def _op(name, start, end, corr=0):
    return Event("op", name, start, end, corr, 0)


def test_graph_calls_on_the_cpu_take_each_kernels_duration():
    events = [_call("k1", 0, 1000), _op("graph_0_cpp_fused_silu_3", 10, 60),
              _op("aten::mm", 100, 400), _op("aten::addmm", 110, 390),  # nested in the mm: not a kernel of its own
              _op("aten::add", 2000, 2100),  # outside every compiled call
              _call("k1", 3000, 3500), _op("graph_0_cpp_fused_silu_3", 3010, 3020)]
    calls = graph_calls(events)
    assert [c.key for c in calls] == ["k1", "k1"]
    assert calls[0].names == ["cpp_fused_silu_3", "mm"] and calls[0].seconds == pytest.approx([50e-9, 300e-9])
    assert calls[1].names == ["cpp_fused_silu_3"] and calls[1].seconds == pytest.approx([10e-9])


def test_graph_calls_on_cuda_take_the_device_time_launched_inside_each_kernel():
    # a Triton launch's marker and a library op, each with its device kernels (one linked to a nested op)
    events = [_call("g", 0, 1000), _op("triton_poi_fused_add_0", 10, 20, corr=5),
              _op("aten::mm", 100, 200, corr=6), _op("aten::addmm", 110, 190, corr=7),
              Event("kernel", "triton_poi_fused_add_0", 5000, 5040, 0, 5),
              Event("kernel", "sm90_gemm", 5100, 5400, 0, 7), Event("gpu_memset", "set", 5050, 5060, 0, 6)]
    (call,) = graph_calls(events)
    assert call.names == ["triton_poi_fused_add_0", "mm"]
    assert call.seconds == pytest.approx([40e-9, 310e-9]) and call.starts == [5000, 5050]


def _rec(i, module, op, step=0, nbytes=0, flops=0, part="", stage="denoiser"):
    return OpRecord(i, op, part, stage, step, module, "", 0, "other", "", "", [], [], "float32", flops, 0, nbytes, 0,
                    nbytes, 0, 1.0, 0.0, False, False)


def test_attribution_one_to_one_for_library_kernels_split_by_bytes_or_flops_for_the_rest():
    rows = []
    for step in (0, 1):
        base = 10 * step
        rows += [_rec(base + 0, "unet.a.to_q", "aten.linear.default", step, nbytes=999),
                 _rec(base + 1, "unet.a.norm", "aten.group_norm.default", step, nbytes=100),
                 _rec(base + 2, "unet.a", "aten.add.Tensor", step, nbytes=300),
                 _rec(base + 3, "unet.a", "aten.view.default", step),
                 _rec(base + 4, "unet.a", "sdpa", step, nbytes=5, flops=10, part="score"),
                 _rec(base + 5, "unet.a", "sdpa", step, nbytes=50, flops=30, part="pv")]
    rows.append(_rec(20, "text_encoder.x", "aten.mm.default", -1, nbytes=4, stage="text_encoder"))
    kernels = [Kernel("mm", True, frozenset({"unet.a.to_q"}), frozenset({"mm"})),
               Kernel("cpp_fused_add_norm_0", False, frozenset({"unet.a.norm", "unet.a"}), frozenset({"pointwise"})),
               Kernel("sdpa_cpu", True, frozenset({"unet.a"}), frozenset({"attention"}))]
    calls = [GraphCall("g", ["mm", "cpp_fused_add_norm_0", "sdpa_cpu", "unknown_kernel"], [4.0, 8.0, 2.0, 1.0],
                       [100, 200, 300, 400]),
             GraphCall("g", ["mm", "cpp_fused_add_norm_0", "sdpa_cpu"], [6.0, 4.0, 1.0], [1000, 1100, 1200]),
             GraphCall("other", ["cpp_x"], [0.5], [2000])]
    a = attribute(calls, {"g": ("denoiser", kernels)}, rows, steps=2)
    # step 0: the GEMM alone gets 4; the fused kernel's 8 is split 100:300 over norm and add (not the view); the
    # attention kernel's 2 by FLOPs 10:30; step 1 likewise with its own calls' times
    assert a.seconds == pytest.approx({0: 4.0, 1: 2.0, 2: 6.0, 4: 0.5, 5: 1.5, 10: 6.0, 11: 1.0, 12: 3.0,
                                       14: 0.25, 15: 0.75})
    assert a.split == {1, 2, 4, 5, 11, 12, 14, 15}
    assert a.unattributed == pytest.approx({"unknown_kernel": 1.0, "cpp_x": 0.5})
    assert a.kernel_s == pytest.approx(26.5) and a.unattributed_s == pytest.approx(1.5)
    assert (a.kernels, a.matched_kernels, a.calls) == (8, 6, 3)
    out = apply(rows, {"denoiser"}, a, origin_ns=0)
    assert out[3].time_s == 0.0 and math.isnan(out[3].start_s)  # the view: compiled away
    assert out[-1].time_s == 1.0  # an uncompiled stage keeps its eager time
    assert out[2].start_s == pytest.approx(200e-9) and out[2].time_apportioned and not out[0].time_apportioned


def test_a_graph_not_called_once_per_step_spreads_over_the_whole_stage():
    rows = [_rec(0, "vae.dec", "aten.silu.default", -1, nbytes=1, stage="vae_decoder"),
            _rec(1, "vae.dec", "aten.silu.default", -1, nbytes=3, stage="vae_decoder")]
    kernels = [Kernel("cpp_fused_silu_0", False, frozenset({"vae.dec"}), frozenset({"pointwise"}))]
    a = attribute([GraphCall("v", ["cpp_fused_silu_0"], [8.0], [0])], {"v": ("vae_decoder", kernels)}, rows, 3)
    assert a.seconds == pytest.approx({0: 2.0, 1: 6.0})


def _strip_times(ops):
    return ops.drop(columns=["time_s", "start_s", "time_apportioned"]).reset_index(drop=True)


@pytest.mark.slow
def test_real_compiled_tiny_records_match_eager_and_kernel_times_cover_the_unet(tmp_path):
    # tiny at 384 px on Inductor's C++ backend (a cold cache compiles for about a minute): the compiled run's
    # records are the eager run's, every kernel is matched to Inductor's provenance, and the UNet's per-layer-type
    # seconds (kernel time) add up to within 10% of the measured compiled UNet stage of the same (profiled) run;
    # the rest is the compiled wrapper's host time between kernels
    kw = dict(model="tiny", steps=2, sample_steps=0, height=384, width=384)
    eager = diffprobe.profile(**kw, out=str(tmp_path / "eager"))
    comp = diffprobe.profile(**kw, compile=True, out=str(tmp_path / "compiled"))
    assert _strip_times(comp.ops).equals(_strip_times(eager.ops))
    d = comp.to_dict()
    c = d["compiled"]
    assert c["kernels"] > 100 and c["kernels_matched"] == c["kernels"] and c["unattributed_s"] == 0
    unet = comp.ops[comp.ops["stage"] == "denoiser"]
    per_type = unet.groupby("layer_type")["time_s"].sum()
    assert per_type.sum() == pytest.approx(c["profiled_run_stages"]["denoiser"], rel=0.10)
    assert per_type.sum() < c["profiled_run_stages"]["denoiser"]  # kernels run inside the stage, never beyond it
    compiled_total = comp.ops[comp.ops["stage"].isin(["denoiser", "vae_decoder"])]["time_s"].sum()
    assert compiled_total == pytest.approx(c["kernel_s"] - c["unattributed_s"], rel=1e-9)
    assert unet[unet["op"] == "aten.view.default"]["time_s"].sum() == 0  # views are compiled away
    assert set(c["eager"]["stages"]) == set(d["stages"]) and c["compile_s"] > 0
    assert "provenance" in d["seconds"]["source"]


def test_cuda_graphs_without_cuda_and_compile_without_a_compiler_are_refused(tmp_path, capsys, monkeypatch):
    for argv, needle in ((["--cuda-graphs"], "--cuda-graphs needs --device cuda"),):
        rc = main(["profile", "--model", "tiny", "--steps", "1", "-q", "--out", str(tmp_path / "a"), *argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and needle in err, err
    rc = main(["profile", "--model", "tiny", "--steps", "1", "-q", "--out", str(tmp_path / "c"), "--compile",
               "--chrome-trace"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--chrome-trace" in err, err
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    rc = main(["profile", "--model", "tiny", "--steps", "1", "-q", "--out", str(tmp_path / "b"), "--compile"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no C++ compiler" in err and "Traceback" not in err, err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
