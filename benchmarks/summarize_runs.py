"""A few lines from profile / approx JSON results (what benchmarks/gpu_check.sh prints last)."""

import json
import sys

NEW = {"attention_flops_saved": "attention_share_saved", "unet_s": "denoiser_s"}


def main() -> None:
    for path in sys.argv[1:]:
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            print(path, "no result:", e)
            continue
        if "stages" in d:
            stages = {k: round(v, 4) for k, v in d["stages"].items() if isinstance(v, (int, float))}
            print(path, d.get("device"), d.get("dtype"), f"{d.get('height')}px", "stage seconds:", stages)
        for r in d.get("results", []):
            r = {NEW.get(k, k): v for k, v in r.items()}  # results written before schema 4 too
            print(f"  {r['method']} {r['value']} kept {r['kept_fraction']:.3f} attention FLOPs saved "
                  f"{r['attention_share_saved']:.3f} denoiser_s {r['denoiser_s']:.4f} kernel {r['kernel']} "
                  f"warmup {r['warmup_s']:.1f}s ssim {r['ssim']:.3f}")


if __name__ == "__main__":
    main()
