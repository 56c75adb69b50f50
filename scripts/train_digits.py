"""Train the ``digits`` fixture (see diffprobe/models/digits.py) and write its weights into the package.

Deterministic on a given machine (fixed seeds, fixed thread count); about 16 minutes on a 2-core CPU
(autoencoder ≈ 3 min, text encoder + UNet ≈ 13 min).

    python scripts/train_digits.py [--vae-steps 600] [--unet-steps 2000] [--out PATH]

The committed weights were made in two runs of this script: a full run (its autoencoder was kept), then
``--keep-vae`` (text encoder and UNet retrained from scratch with the recipe below). A single full run gives
weights of the same quality but not the same bits: the random stream differs after stage 1.

Stage 1 trains the KL autoencoder (32×32 RGB ↔ 4×16×16 latents) on reconstruction with a small KL term and
sets ``scaling_factor`` to 1/std of the latents. Stage 2 trains the text encoder and UNet together as a DDPM
(v-prediction, as SD 2.1, and the scheduler's own betas) with 10% empty prompts so classifier-free guidance
works. With epsilon prediction the prompt matters only at high noise, where the loss barely weighs it: the
model learned the digits but ignored which one was asked for; the v target is mostly x0 at high noise. Besides
cross-attention, the UNet gets the text as diffusers' ``addition_embed_type="text"`` (an attention-pooled text
embedding added to the timestep embedding): with cross-attention alone, at this size and training budget, the
UNet learned to ignore the prompt (its noise prediction changed by 0.2% between digits). The text context is
8 CLIP tokens (the longest prompt is 7), not SD's 77, so the digit word is not diluted among 70 padding tokens.
Finally it samples every digit with the real pipeline and scores the images with the digit classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    from diffprobe.models import digits
    from diffprobe.models.registry import _build_module, get_spec
    from diffprobe.models.tokenizer import load_clip_tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--vae-steps", type=int, default=600)
    ap.add_argument("--unet-steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=None, help="weights file (default: the package's digits.safetensors)")
    ap.add_argument("--keep-vae", action="store_true",
                    help="keep the packaged autoencoder (skip stage 1); text encoder and UNet train from scratch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--token-std", type=float, default=1.0, help="initial std of the used token embeddings")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    spec = get_spec("digits")
    folder = Path(str(spec.folder))
    x, y = digits.images()
    n = len(x)
    t0 = time.perf_counter()

    # -- stage 1: autoencoder ------------------------------------------------------------------------------
    vae = _build_module(spec, "vae")
    if a.keep_vae:
        from safetensors.torch import load_file

        saved = load_file(str(digits.weights_path()))
        vae.load_state_dict({k[4:]: v for k, v in saved.items() if k.startswith("vae.")})
        a.vae_steps = 0
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(a.vae_steps):
        idx = torch.randint(0, n, (a.batch,), generator=g)
        post = vae.encode(x[idx]).latent_dist
        z = post.sample(generator=g)
        rec = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(rec, x[idx]) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == a.vae_steps - 1:
            print(f"vae {step:5d} loss {loss.item():.5f}  {time.perf_counter() - t0:.0f} s", flush=True)
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mode() for i in range(0, n, 256)])
    scale = spec.config("vae")["scaling_factor"] if a.keep_vae else float(1.0 / latents.std())
    cfg_path = folder / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["scaling_factor"] = round(scale, 6)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    vae.register_to_config(scaling_factor=round(scale, 6))
    latents = latents * round(scale, 6)
    print(f"latents {tuple(latents.shape)}, scaling_factor {scale:.4f}", flush=True)

    # -- stage 2: text encoder + UNet as a DDPM ------------------------------------------------------------
    tok = load_clip_tokenizer(spec.config("tokenizer"))
    te = _build_module(spec, "text_encoder").train()
    unet = _build_module(spec, "unet").train()
    all_prompts = [digits.prompt(d, t) for d in range(10) for t in range(len(digits.TEMPLATES))] + [""]
    ids_all = tok(all_prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
    used = torch.unique(ids_all)
    with torch.no_grad():
        emb = te.get_input_embeddings().weight
        keep = torch.zeros(len(emb), dtype=torch.bool)
        keep[used] = True
        emb[~keep] = 0  # rows no prompt uses stay exactly zero (Adam never updates a row without gradient)
        # the used rows start large (std 1 instead of CLIP's 0.02) so the digit word dominates its position's
        # residual stream and, through causal attention, the padding tokens after it; at CLIP's init the
        # prompt embeddings differ by a few percent and the UNet learns to ignore them (text effect ~ 0.002)
        emb[used] = torch.randn(len(used), emb.shape[1], generator=g) * a.token_std
    sched = DDPMScheduler.from_config(spec.config("scheduler"))
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.Adam(params, lr=a.lr)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.unet_steps, eta_min=a.lr / 10)
    for step in range(a.unet_steps):
        idx = torch.randint(0, n, (a.batch,), generator=g)
        tmpl = torch.randint(0, len(digits.TEMPLATES), (a.batch,), generator=g)
        drop = torch.rand(a.batch, generator=g) < 0.1
        rows = [len(all_prompts) - 1 if drop[i] else int(y[idx[i]]) * len(digits.TEMPLATES) + int(tmpl[i])
                for i in range(a.batch)]
        ctx = te(ids_all[rows])[0]
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (a.batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        pred = unet(zt, t, ctx).sample
        loss = torch.nn.functional.mse_loss(pred, sched.get_velocity(z0, noise, t))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        if step % 250 == 0 or step == a.unet_steps - 1:
            print(f"unet {step:5d} loss {loss.item():.5f}  text effect {_text_effect(te, unet, ids_all):.4f}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    te.eval()
    unet.eval()

    out = Path(a.out) if a.out else folder / "digits.safetensors"
    tensors = digits.pack_state({"text_encoder": te, "unet": unet, "vae": vae})
    save_file(tensors, str(out), metadata={"trained_by": "scripts/train_digits.py",
                                           "vae_steps": str(a.vae_steps), "unet_steps": str(a.unet_steps)})
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB), {time.perf_counter() - t0:.0f} s", flush=True)
    if a.out is None:  # the packaged weights were written: score them through the real pipeline
        acc = evaluate()
        print(f"conditional accuracy of dense generation (classifier): {acc:.3f}", flush=True)


def _text_effect(te, unet, ids_all) -> float:
    """How much the noise prediction depends on the prompt: mean |eps(digit a) - eps(digit b)| / mean |eps| at
    t = 700 on a fixed noisy input (0: the text is ignored)."""
    import torch

    from diffprobe.models import digits

    with torch.no_grad():
        n = len(digits.TEMPLATES)
        ctx = te(ids_all[[0, 4 * n, 7 * n]])[0]  # "a handwritten zero / four / seven"
        z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5)).repeat(3, 1, 1, 1)
        eps = unet(z, torch.tensor([700] * 3), ctx).sample
    return float(((eps[0] - eps[1]).abs().mean() + (eps[0] - eps[2]).abs().mean()) / 2 / eps.abs().mean())


def evaluate(per_digit: int = 10, steps: int = 25, guidance: float = 4.0) -> float:
    """Generate ``per_digit`` images of every digit with the packaged weights; the classifier's accuracy."""
    import torch

    from diffprobe.models import digits
    from diffprobe.models.registry import build_components, get_spec, pipeline_from_components

    spec = get_spec("digits")
    pipe = pipeline_from_components(spec, build_components(spec, "random", 0))
    pipe.set_progress_bar_config(disable=True)
    clf = digits.DigitClassifier()
    prompts = [digits.prompt(d) for d in range(10) for _ in range(per_digit)]
    with torch.inference_mode():
        imgs = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, height=32, width=32,
                    generator=torch.Generator().manual_seed(0), output_type="pt").images
    return clf.accuracy(imgs, [d for d in range(10) for _ in range(per_digit)])


if __name__ == "__main__":
    main()
