"""Step-level reuse on the CPU: time and FLOPs saved per method against dense, same noise, both untraced
(`diffprobe approx`), on SD 1.5 at 512 px (a 4-step run: PNDM makes 5 UNet evaluations), on `digits`, and the
transformer caches on `tiny-flux` at 512 px (1024 image tokens; random weights: FLOPs and seconds, not quality).

    python benchmarks/reuse.py [--sd15-steps 4] [--digits-steps 25] [--flux-steps 12] [--only digits,sd15,flux]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffprobe.cli import main as cli  # noqa: E402
from diffprobe.hardware.environment import cpu_name  # noqa: E402


def run(label: str, argv: list[str]) -> None:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rc = cli(["approx", *argv, "--out", f"{tmp}/ap", "-q", "--no-save-masks"])
        wall = time.perf_counter() - t0
        if rc != 0:
            print(f"{label}: exit {rc}")
            return
        state = json.loads(Path(f"{tmp}/ap/approx.json").read_text())
    dense = state["results"][0]
    print(f"\n{label} ({wall:.0f} s in all)")
    print("| setting | end-to-end FLOPs saved | UNet s (untraced) | UNet speedup | PSNR | SSIM | digit accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in state["results"]:
        name = "dense" if r["method"] == "dense" else r.get("setting")
        psnr = "identical" if r["psnr"] is None else f"{r['psnr']:.1f} dB"
        acc = "" if r.get("accuracy") is None else f"{100 * r['accuracy']:.0f}%"
        print(f"| {name} | {100 * r['end_to_end_share_saved']:.1f}% | {r['denoiser_s']:.2f} | "
              f"{dense['denoiser_s'] / r['denoiser_s']:.2f}x | {psnr} | {r['ssim']:.3f} | {acc} |")


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--sd15-steps", type=int, default=4)
    ap.add_argument("--digits-steps", type=int, default=25)
    ap.add_argument("--flux-steps", type=int, default=12)
    ap.add_argument("--only", default="digits,sd15,flux")
    a = ap.parse_args()
    only = set(a.only.split(","))
    print(f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}")
    if "digits" in only:
        run("digits, 32 px, 30 images", ["--model", "digits", "--steps", str(a.digits_steps), "--method",
                                         "deepcache,tgate", "--interval", "2,3,5", "--gate", "5,10"])
    if "sd15" in only:
        run("SD 1.5 (random weights), 512 px, 1 image", ["--model", "sd15", "--height", "512", "--width", "512",
                                                          "--steps", str(a.sd15_steps), "--method", "deepcache,tgate",
                                                          "--interval", "2,3", "--gate", "2"])
    if "flux" in only:
        run(f"tiny-flux (random weights), 512 px, {a.flux_steps} steps, 1 image",
            ["--model", "tiny-flux", "--height", "512", "--width", "512", "--steps", str(a.flux_steps), "--method",
             "first-block-cache,pab,faster-cache,taylorseer,teacache", "--threshold", "0.2,0.4", "--skip", "2,3",
             "--interval", "2,3"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
