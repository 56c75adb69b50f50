"""report.html: self-contained, every figure loads in a real browser, user strings escaped, bad folders refused."""

import json

import pytest

from diffprobe.cli import main
from tests.report.browser import chromium, leaked_requests

PROMPT = '<script>alert("x")</script><b>bold</b> & <img src="https://example.com/t.png">'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    assert main(["profile", "--model", "tiny", "--steps", "3", "--hardware", "h100-sxm", "--prompt", PROMPT,
                 "--out", str(base / "p"), "-q"]) == 0
    assert main(["sweep", "--model", "tiny", "--resolutions", "64,128,256", "--steps", "2", "--out",
                 str(base / "s"), "-q", "--hardware", "a100-sxm-80gb"]) == 0
    assert main(["profile", "--model", "tiny", "--steps", "2", "--guidance", "1", "--out", str(base / "p2"),
                 "-q"]) == 0
    return base


def _check_in_browser(tmp_path, page, min_images):
    driver = chromium(tmp_path / "chrome-profile")
    try:
        url = page.resolve().as_uri()
        driver.get(url)
        driver.save_screenshot(str(tmp_path / "shot.png"))
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) >= min_images
        assert all(c and w > 0 and h > 0 for c, w, h in images), images
        # nothing but the file itself was requested (figures are data: URIs; no scripts, fonts or styles fetched)
        assert leaked_requests(driver, url) == []
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [r for r in resources if not r.startswith("data:")] == []
        assert driver.execute_script("return document.scripts.length") == 0
        text = driver.execute_script("return document.body.innerText")
    finally:
        driver.quit()
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    return text


@pytest.mark.browser
@pytest.mark.slow
def test_profile_report_in_a_real_browser(runs, tmp_path):
    page = runs / "p" / "report.html"
    text = _check_in_browser(tmp_path, page, min_images=4)  # stage bars, steps, roofline, the image
    assert PROMPT in text  # shown as text, not interpreted as markup
    assert "Random weights" in text and "Findings" in text and "Roofline on H100-SXM" in text
    raw = page.read_text()
    assert "<script>" not in raw and "&lt;script&gt;" in raw and "https://example.com" not in raw.replace(
        "https://example.com/t.png&quot;", "")
    assert (runs / "p" / "figures" / "roofline.png").exists() and (runs / "p" / "layers.parquet").exists()


@pytest.mark.browser
def test_sweep_report_in_a_real_browser(runs, tmp_path):
    text = _check_in_browser(tmp_path, runs / "s" / "report.html", min_images=3)
    assert "overtakes convolution" in text and "Scaling exponents" in text
    assert (runs / "s" / "figures" / "scaling_flops.svg").exists()


@pytest.mark.browser
def test_compare_report_and_ratios(runs, tmp_path, capsys):
    assert main(["compare", str(runs / "p"), str(runs / "p2"), "--out", str(tmp_path / "c"), "--format",
                 "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["differs"] == ["steps", "guidance", "prompt"]
    p1 = json.loads((runs / "p" / "run.json").read_text())
    p2 = json.loads((runs / "p2" / "run.json").read_text())
    label2 = d["runs"][1]["label"]
    assert d["ratios"]["flops.total"][label2] == pytest.approx(p2["flops"]["total"] / p1["flops"]["total"])
    text = _check_in_browser(tmp_path, tmp_path / "c" / "report.html", min_images=1)
    assert "The runs differ in: steps, guidance, prompt" in text


@pytest.mark.slow
def test_report_rebuilds_and_refuses_bad_folders(runs, tmp_path, capsys):
    assert main(["report", str(runs / "p")]) == 0
    capsys.readouterr()
    bad = [
        ([str(tmp_path / "nope")], "does not exist"),
        ([str(tmp_path)], "not a diffprobe run folder"),
    ]
    half = tmp_path / "half"
    half.mkdir()
    (half / "run.json").write_text('{"schema_version": 2, "kind": "prof')
    bad.append(([str(half)], "unreadable"))
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text('{"schema_version": 1, "kind": "profile"}')
    bad.append(([str(old)], "schema version 1"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((runs / "p" / "run.json").read_text())
    (broken / "ops.parquet").write_bytes(b"PAR1 not really")
    bad.append(([str(broken)], "ops.parquet is unreadable"))
    for argv, message in bad:
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, (argv, err)
    assert main(["compare", str(runs / "p"), str(runs / "s")]) == 2
    err = capsys.readouterr().err
    assert "different kinds" in err and "is a sweep" in err and err.count("\n") == 1


@pytest.mark.slow
def test_failed_run_folder_still_gets_a_report(runs, tmp_path, capsys):
    failed = tmp_path / "failed"
    failed.mkdir()
    d = json.loads((runs / "p" / "run.json").read_text())
    d.update(status="failed", error="out of memory in stage unet", flops=None, seconds=None, roofline=None)
    (failed / "run.json").write_text(json.dumps(d))
    assert main(["report", str(failed)]) == 0
    assert "This run failed: out of memory in stage unet" in (failed / "report.html").read_text()
