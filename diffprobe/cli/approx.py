"""``diffprobe approx``: its per-method options come from the two method registries."""

from __future__ import annotations

from typing import Optional

import typer

from diffprobe.attention.methods import METHOD_REGISTRY, ParameterError
from diffprobe.attention.tiles import parse_tile
from diffprobe.cli.common import (
    O_DEVICE,
    O_DTYPE,
    O_FORCE,
    O_FORMAT,
    O_FRAMES,
    O_GUIDANCE,
    O_PICKLE,
    O_PROMPT,
    O_QUIET,
    O_SCHEDULER,
    O_SEED,
    O_WEIGHTS,
    Dtype,
    Format,
    Mode,
    base_config,
    build_report,
    bundled,
    print_document,
    print_json,
    progress_bar,
    with_executor_options,
)
from diffprobe.errors import DiffprobeError
from diffprobe.methods.registry import REUSE
from diffprobe.parsing import parse_floats, parse_ints

METHOD_HELP = (f"Comma list of methods: {', '.join(METHOD_REGISTRY)} (attention) and {', '.join(REUSE)} (step-level "
               "reuse).")


def method_options() -> dict[str, tuple[str, str]]:
    """Each method parameter's option (``--eps``, ``--interval``, ...): its default values and help, from the two
    registries (methods sharing a parameter share its option; each says what the parameter does to it)."""
    by_param: dict[str, list] = {}
    for m in (*METHOD_REGISTRY.values(), *REUSE.values()):
        by_param.setdefault(m.param, []).append(m)
    return {param: (ms[0].default, "; ".join(f"{m.name}: {m.param_help}" for m in ms) + f" ({ms[0].domain}).")
            for param, ms in by_param.items()}


def parsed_methods(method: str, values: dict[str, str], setting: str | None) -> dict[str, list[float]]:
    """The values to try of each method named in ``method``, each from its parameter's option; a value outside a
    method's domain is reported with the option's name."""
    from diffprobe.attention.approx import parse_values

    names = [m.strip() for m in method.split(",") if m.strip()]
    known = (*METHOD_REGISTRY, *REUSE)
    bad = [m for m in names if m not in known]
    if bad or (not names and not setting):
        raise DiffprobeError(f"unknown method {(bad or [''])[0]!r}; use one of {', '.join(known)}")
    out = {}
    for m in names:
        if m in REUSE:
            flag = f"--{REUSE[m].param}"
            out[m] = list(parse_floats(values[REUSE[m].param], flag, 0, float("inf"), True))
            continue
        param = METHOD_REGISTRY[m].param
        try:
            out[m] = parse_values(m, values[param], f"--{param}")
        except ParameterError as exc:  # the library names the parameter; here it is an option
            raise DiffprobeError(f"--{exc.param} {exc.value:g} {exc.rule}") from None
    return out


def with_method_options(fn):
    """``fn`` (taking the method parameters as ``**values``) with one typer option per method parameter."""
    import inspect

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    at = next(i for i, p in enumerate(params) if p.name == "method") + 1
    extra = [inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=str,
                               default=typer.Option(default, f"--{param}", help=help))
             for param, (default, help) in method_options().items()]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    fn.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])
    return fn


O_TILE = typer.Option(None, "--tile", help="block, video models: blocks are 3D tiles of the latent token grid, "
                      "frames x height x width (e.g. 2x8x8), for the video's self-attention (their volume is the "
                      "block side elsewhere).")
O_INTERVALS = typer.Option("1", "--mask-interval", help="block: predict a layer's block mask every N steps and reuse "
                           "it in between (no predictor on those steps); a comma list runs every block setting once "
                           "per interval.")
O_SAVE_MASKS = typer.Option(True, "--save-masks/--no-save-masks", help="Keep what each setting kept per call in "
                            "masks/<setting>/ (for `diffprobe accel --masks`).")


O_PROMPTS = typer.Option(None, "--prompts", help="Quality at scale: a prompts file (one a line, or JSON Lines with "
                        "\"prompt\" and an optional \"seed\"); dense and every setting from the same seeds, scored "
                        "per image (campaign.parquet) and per setting with 95% intervals and FID.")
CAMPAIGN_OPTIONS = {
    "prompts": (Optional[str], O_PROMPTS),
    "images_per_prompt": (int, typer.Option(1, "--images-per-prompt", help="--prompts: images per prompt (seeds "
                                            "seed, seed+1, ...).")),
    "prompt_batch": (int, typer.Option(8, "--prompt-batch", help="--prompts: images generated together (a chunk: "
                                       "one Ray Data batch).")),
    "inception_weights": (Optional[str], typer.Option(None, "--inception-weights", help="--prompts: the TorchScript "
                                                      "FID Inception detector (inception-2015-12-05.pt), local; "
                                                      "never downloaded.")),
    "reference_images": (Optional[str], typer.Option(None, "--reference-images", help="--prompts: a folder of images "
                                                     "for FID against a reference set.")),
}


def _campaign(executor, prompts, images_per_prompt, prompt_batch, inception_weights, reference_images):
    """The campaign request of the options (None without --prompts, whose options then must not be given)."""
    from diffprobe.run.campaign import CampaignRequest

    if prompts is None:
        given = [f for f, v, d in (("--inception-weights", inception_weights, None), ("--reference-images",
                 reference_images, None), ("--images-per-prompt", images_per_prompt, 1)) if v != d]
        if given:
            raise DiffprobeError(f"{given[0]} applies to a --prompts campaign: add --prompts FILE")
        if executor.kind == "ray":
            raise DiffprobeError("--executor ray spreads a --prompts campaign over Ray; approx's timed rows run one "
                                 "after another here (concurrent workers would distort their seconds): add --prompts "
                                 "FILE or leave --executor out")
        return None
    return CampaignRequest(prompts, images_per_prompt, inception_weights, reference_images, prompt_batch, executor)


def _with_campaign(fn):
    """``fn`` (taking ``campaign``) with the --prompts options and the executor options, made into one request (the
    inner bundle's ``executor`` parameter is where the executor options' bundle puts its Executor)."""
    return with_executor_options(bundled("campaign", {**CAMPAIGN_OPTIONS, "executor": (str, None)}, _campaign)(fn))


@_with_campaign
@with_method_options
def approx(
    method: str = typer.Option("threshold", help=METHOD_HELP),
    block: int = typer.Option(64, help="block: block side in tokens."),
    tile: Optional[str] = O_TILE,
    frames: Optional[int] = O_FRAMES,
    mask_interval: str = O_INTERVALS,
    setting: Optional[str] = typer.Option(None, "--setting", help="More settings, comma list; + joins an attention "
                                          "method and a reuse method, measured together: block=0.9+deepcache=3."),
    rank: int = typer.Option(8, help="predicted: rank of the random projection that estimates the scores."),
    renormalize: bool = typer.Option(True, "--renormalize/--no-renormalize",
                                     help="Rescale kept probabilities to sum to 1 per row."),
    model: str = typer.Option("digits", help="Architecture; quality means something on digits or --weights."),
    height: Optional[int] = typer.Option(None, help="Image height in px (default: native)."),
    width: Optional[int] = typer.Option(None, help="Image width in px (default: native)."),
    prompt: Optional[str] = O_PROMPT,
    steps: int = typer.Option(25, help="Denoising steps."),
    scheduler: Optional[str] = O_SCHEDULER,
    guidance: Optional[float] = O_GUIDANCE,
    seed: int = O_SEED,
    device: str = O_DEVICE,
    dtype: Dtype = O_DTYPE,
    weights: Optional[str] = O_WEIGHTS,
    allow_pickle: bool = O_PICKLE,
    per_digit: int = typer.Option(3, help="digits: images per digit in the quality batch."),
    repeat: int = typer.Option(1, help="Timed generations per row (same noise): the median seconds, with their "
                               "min-max spread."),
    clip_weights: Optional[str] = typer.Option(None, help="Local CLIP model folder (transformers format) for a CLIP "
                                               "score of every setting; never downloaded."),
    save_masks: bool = O_SAVE_MASKS,
    out_dir: Optional[str] = typer.Option(None, "--out", help="Output folder, new or empty (default: "
                                          "runs/<time>-approx-<model>)."),
    force: bool = O_FORCE,
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
    campaign=None,
    **values: str,
) -> None:
    """Approximate attention vs dense: FLOPs saved (exact account), time, PSNR/SSIM, digit accuracy."""
    from diffprobe.run.approx import run_approx

    methods = parsed_methods(method, values, setting)
    extra = [t.strip() for t in (setting or "").split(",") if t.strip()]
    intervals = parse_ints(mask_interval, "--mask-interval")
    for flag, value, least in (("--per-digit", per_digit, 1), ("--block", block, 1), ("--rank", rank, 1),
                               ("--repeat", repeat, 1)):
        if value < least:
            raise DiffprobeError(f"{flag} {value} must be at least {least}")
    base = base_config(model=model, prompt=prompt, height=height, width=width, steps=steps, guidance=guidance,
                        seed=seed, device=device, dtype=dtype, weights=weights, allow_pickle=allow_pickle,
                        mode=Mode.measured, trace_ops=False, scheduler=scheduler, frames=frames)
    bar, callback = progress_bar(quiet)
    with bar:
        state = run_approx(base, methods, renormalize=renormalize, block=block, rank=rank, per_digit=per_digit,
                           out=out_dir, progress=callback, clip_weights=clip_weights, force=force,
                           save_masks=save_masks, settings=extra, mask_interval=intervals, repeat=repeat,
                           tile=parse_tile(tile, "--tile") if tile is not None else None, campaign=campaign)
        report_path = build_report(state["run_dir"])
    print_json(state) if fmt is Format.json else print_document("approx", state, state["run_dir"], report_path)

