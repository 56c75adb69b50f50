"""Hardware presets: data files with sources, validated on load; this-cpu measured once and cached."""

import json

import pytest

from diffprobe.errors import DiffprobeError
from diffprobe.hardware import measure
from diffprobe.hardware.presets import get_preset, list_presets

DATASHEET = {  # dense FP16 tensor TFLOP/s and bandwidth in TB/s, as printed in each vendor datasheet
    "A100-SXM-80GB": (312, 2.039), "H100-SXM": (989.4, 3.35), "H200": (989.4, 4.8), "L40S": (362.05, 0.864),
    "RTX-4090": (165.2, 1.008),
}


def test_builtin_presets_carry_datasheet_numbers_and_sources():
    names = list_presets()
    assert set(DATASHEET) | {"this-cpu"} <= set(names)
    for name, (fp16_tflops, tbps) in DATASHEET.items():
        p = get_preset(name.lower())  # case-insensitive
        assert p.peak("float16") == pytest.approx(fp16_tflops * 1e12)
        assert p.memory_bandwidth == pytest.approx(tbps * 1e12)
        assert p.peak("float32") < p.peak("bfloat16") and "datasheet" in p.source.lower() or "whitepaper" in p.source
        assert p.ridge("float16") == pytest.approx(fp16_tflops / tbps)


def _write(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return str(path)


GOOD = """name = "mine"\ntitle = "t"\nsource = "s"\nmemory_bytes = 1e9\nmemory_bandwidth = 1e11
[peak_flops]\nfloat32 = 1e12\nfloat16 = 2e12\nbfloat16 = 2e12\n"""


def test_user_preset_file_and_its_errors(tmp_path):
    assert get_preset(_write(tmp_path, GOOD)).peak("float16") == 2e12
    with pytest.raises(DiffprobeError, match="missing field 'memory_bandwidth'"):
        get_preset(_write(tmp_path, GOOD.replace("memory_bandwidth = 1e11\n", "")))
    with pytest.raises(DiffprobeError, match="missing field 'peak_flops.bfloat16'"):
        get_preset(_write(tmp_path, GOOD.replace("bfloat16 = 2e12\n", "")))
    with pytest.raises(DiffprobeError, match="positive number"):
        get_preset(_write(tmp_path, GOOD.replace("float32 = 1e12", 'float32 = "fast"')))
    with pytest.raises(DiffprobeError, match="not valid TOML"):
        get_preset(_write(tmp_path, "name = "))
    with pytest.raises(DiffprobeError, match="unknown hardware preset 'B200'"):
        get_preset("B200")


def test_this_cpu_is_measured_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROBE_CACHE", str(tmp_path))
    small = {"matmul_n": {"float32": 128, "bfloat16": 64, "float16": 64}, "copy_bytes": 4 * 2**20, "repeats": 2}
    p = measure.this_cpu(remeasure=True, sizes=small)
    assert p.kind == "cpu" and p.memory_bandwidth > 1e8 and p.peak("float32") > 1e8 and p.memory_bytes > 2**30
    cached = json.loads(measure.cache_path().read_text())
    assert cached["peak_flops"]["float32"] == p.peak("float32")

    def boom(*_a, **_k):
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(measure, "measure", boom)
    assert get_preset("this-cpu").peak("float32") == p.peak("float32")
