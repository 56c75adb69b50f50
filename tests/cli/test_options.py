"""Options checked before any work: lists, empty folders, memory and time refusals, options that would be ignored."""

import pytest

from diffprobe.cli import main
from tests.cli_checks import one_line_error as _one_line_error

# -- 12. composites apart ------------------------------------------------------------------------------------------


# -- 21. comma lists, empty --out, wording ---------------------------------------------------------------------------
@pytest.mark.parametrize("value, needle", [("64,,128", "empty item"), ("64,64", "twice"), ("64,64x64", "twice")])
def test_resolution_lists_refuse_empty_and_repeated_items(value, needle, tmp_path, capsys):
    _one_line_error(capsys, ["sweep", "--model", "tiny", "--resolutions", value, "--out", str(tmp_path / "o")],
                    needle)


@pytest.mark.parametrize("command", [["sweep", "--model", "tiny", "--resolutions", "64"], ["sparsity"]])
def test_empty_out_is_named_as_empty(command, capsys):
    _one_line_error(capsys, command + ["--out", ""], "--out is empty")


# -- 14. methods that would change nothing ------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["approx", "--method", "threshold,topk"], ["profile", "--approx", "topk=4"]])
def test_attention_methods_on_sana_are_refused(command, tmp_path, capsys):
    _one_line_error(capsys, command + ["--model", "tiny-sana", "--steps", "2", "--out", str(tmp_path / "o"), "-q"],
                    "linear attention", "change nothing")


# -- 16. sparsity does not offer an analytic mode it lacks ------------------------------------------------------------
@pytest.mark.parametrize("command", ["sparsity", "approx"])
def test_memory_refusal_offers_only_what_the_command_has(command, capsys, monkeypatch):
    import diffprobe.hardware.environment as env

    monkeypatch.setattr(env, "meminfo_bytes", lambda key: 2**20)  # 1 MiB available
    err = _one_line_error(capsys, [command, "--model", "tiny"], "available")
    assert "--mode analytic" not in err


# -- 17, 19. kernels bench: estimated before it starts, speedups above the limit explained -----------------------------
def test_kernels_bench_refuses_what_would_take_too_long(capsys):
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "200000", "--heads", "8"], "would take about",
                    "--max-seconds")


def test_a_speedup_above_the_limit_is_explained(capsys):
    from diffprobe.report.text import bench_lines

    r = {"tokens": 4096, "heads": 8, "head_dim": 40, "batch": 1, "dtype": "float16", "device": "cpu",
         "device_name": "x", "block_size": 64, "kept_density": 0.25, "dense_backend": "default", "dense_s": 5.69,
         "backend": "cpp", "sparse_s": 1.0, "first_call_s": 0.1, "kernel_s": 1.0, "speedup": 5.69,
         "kernel_speedup": 5.69, "limit": 4.0, "above_limit_note": "the speedup exceeds 1/density"}
    assert any(line.startswith("note: the speedup exceeds") for line in bench_lines(r))


# -- 20. options a mode cannot honour ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["profile", "--mode", "analytic", "--approx", "teacache=0.3"], "Flux"),
    (["profile", "--mode", "analytic", "--device", "cuda"], "no CUDA GPU"),
    (["profile", "--mode", "analytic", "--op-timer", "profiler"], "times nothing"),
    (["profile", "--mode", "analytic", "--repeat", "3"], "times nothing"),
    (["profile", "--mask-interval", "3"], "block=TAU"),
    (["accel", "gemm", "--m", "8", "--k", "8", "--n", "8", "--arch", "sa-block64"], "run folder"),
    (["accel", "gemm", "--m", "8", "--k", "8", "--n", "8", "--density", "0.5"], "run folder"),
])
def test_options_that_would_be_ignored_are_refused(argv, needle, tmp_path, capsys):
    extra = ["--model", "tiny", "--out", str(tmp_path / "o"), "-q"] if argv[0] == "profile" else []
    _one_line_error(capsys, argv + extra, needle)


def test_accel_of_a_run_refuses_gemm_options(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "1", "--mode", "analytic", "--out", str(tmp_path / "p"),
                 "-q", "--format", "json"]) == 0
    capsys.readouterr()
    _one_line_error(capsys, ["accel", str(tmp_path / "p"), "--rows", "64"], "--rows", "accel gemm")


def test_weights_folder_without_a_pipeline_class(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model_index.json").write_text("{}")
    err = _one_line_error(capsys, ["profile", "--model", "tiny", "--weights", str(tmp_path / "w"), "--out",
                                   str(tmp_path / "o"), "-q"], "names no pipeline class")
    assert "None" not in err
