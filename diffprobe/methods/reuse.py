"""Step-level reuse: work a method skips at some denoising steps by reusing what an earlier step computed.

* ``deepcache`` (interval N, branch b): DeepCache (Ma et al., CVPR 2024) through PyPI's ``DeepCache`` package
  (``DeepCacheSDHelper``). Every N-th step runs the whole UNet; the steps between run only the shallow branch b
  (the first down block's first layers and the matching up-block layers) and reuse the deeper features cached at
  the last full step.
* ``tgate`` (gate step g): T-GATE through PyPI's ``tgate`` package (see :class:`TGate`).
* ``first-block-cache`` (threshold), ``pab`` and ``faster-cache`` (skip range), ``taylorseer`` (interval):
  diffusers' own cache hooks on a diffusion transformer (see :class:`DiffusersCache`).
* ``teacache`` (threshold): TeaCache, written here from its paper as block hooks (see :class:`TeaCache`).

A method is a context manager over a pipeline (:meth:`ReuseMethod.installed`); :meth:`ReuseMethod.plan_key` says
which kind of step a denoising step is (equal keys: the same modules run), so analytic mode replays a traced step
of the same kind instead of assuming every step is the same.
"""

from __future__ import annotations

import contextlib

from diffprobe.errors import DiffprobeError
from diffprobe.models.families import Family, family_of
from diffprobe.models.families.roles import is_attention
from diffprobe.models.registry import denoiser

UNET_FAMILY = "UNet models (sd15, sd21, sd21-base, sdxl, tiny, digits)"


class ReuseMethod:
    """A step-level reuse method with one parameter ``value`` (see the subclasses)."""

    name = ""
    param = ""
    fits = ""
    param_help = ""  # what its parameter does (the CLI's help)
    domain = "whole numbers >= 1"  # its parameter's values
    default = ""  # the values ``diffprobe approx`` tries by default (comma list)
    families: tuple[str, ...] = ()  # the model families it applies to (models/families; empty: any)
    data_dependent = False  # True: the skip decision reads the activations (measured runs only, traced apart)
    options: dict = {}  # whole-number options after the value (``deepcache=3:branch=1``): name -> what it does

    def __init__(self, value: float):
        self.value = value

    def check_spec(self, family: Family, model: str) -> None:
        """Refuse, before anything is built, a model of a family this method does not apply to."""
        if self.families and family.name not in self.families:
            raise DiffprobeError(f"{self.name} applies to {self.fits}; {model} is {family.title} "
                                 f"({', '.join(family.pipelines)})")

    def check_model(self, pipe, model: str) -> None:
        """Refuse a model this method does not apply to (one line naming the families it fits)."""
        self.check_spec(family_of(pipe), model)

    def plan_key(self, step: int):
        """A key equal for steps that run the same modules (``step``: 0-based denoising step)."""
        return None

    @contextlib.contextmanager
    def installed(self, pipe):
        yield self

    def noop(self) -> bool:
        return False


class DeepCache(ReuseMethod):
    name = "deepcache"
    param = "interval"
    param_help = "a full UNet every N steps, the rest reuse its deep features"
    default = "2,3,5"
    fits = UNET_FAMILY
    families = ("sd", "sdxl")
    options = {"branch": "the shallow branch kept at cached steps (DeepCacheSDHelper's cache_branch_id; 0: the "
                         "first down block's first layers; the DeepCache and T-GATE papers' SD figures use 1)"}

    def __init__(self, value: float, branch: int = 0):
        if not (value >= 1 and float(value).is_integer()):
            raise DiffprobeError(f"deepcache interval must be a whole number of steps >= 1, got {value:g}")
        if not (isinstance(branch, int) and branch >= 0):
            raise DiffprobeError(f"deepcache branch must be 0 or more, got {branch}")
        super().__init__(float(value))
        self.interval, self.branch = int(value), branch

    def check_model(self, pipe, model: str) -> None:
        super().check_model(pipe, model)
        unet = getattr(pipe, "unet", None)
        if unet is None or not hasattr(unet, "down_blocks"):
            raise DiffprobeError(f"deepcache applies to {self.fits}; {model} has no UNet")
        limit = 3 * len(unet.down_blocks)
        if self.branch >= limit:
            raise DiffprobeError(f"deepcache branch {self.branch} is out of range for {model}: its UNet has "
                                 f"{len(unet.down_blocks)} down blocks, so branches 0-{limit - 1}")

    def plan_key(self, step: int):
        return "full" if step % self.interval == 0 else "cached"

    def noop(self) -> bool:
        return self.interval == 1

    @contextlib.contextmanager
    def installed(self, pipe):
        from DeepCache import DeepCacheSDHelper

        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=self.interval, cache_branch_id=self.branch)
        helper.enable()
        try:
            yield self
        finally:
            helper.disable()


class TGate(ReuseMethod):
    """T-GATE (Liu et al., 2024) through PyPI's ``tgate`` package (its ``tgate`` pipeline call, the SD, SDXL,
    PixArt-α or PixArt-Σ loop as the family names it): cross-attention runs until the gate step, whose output
    (averaged over the CFG halves) is cached and reused after it; the package's loop also stops classifier-free
    guidance at the gate (one branch after it). ``:self_cache=1`` adds the package's self-attention caching with its
    own defaults (before the gate, self-attention computed every ``sp_interval`` = 5 steps after ``warm_up`` = 2 and
    reused in between; after it, every ``fi_interval`` = 1 step); ``:self_cache=0`` (the default) computes it
    at every step: the gate alone, as the paper's method. The package replaces every ``Attention`` module's forward,
    so an attention method cannot run beside it."""

    name = "tgate"
    param = "gate"
    param_help = "the step after which cross-attention is reused and guidance stops"
    default = "5,10"
    fits = ("SD 1.x/2.x, SDXL and PixArt-α/Σ models (sd15, sd21, sd21-base, sdxl, pixart-alpha, pixart-sigma, tiny, "
            "tiny-pixart, digits; the package's loops)")
    families = ("sd", "sdxl", "pixart")
    options = {"self_cache": "1: the package's self-attention caching too (sp_interval 5, fi_interval 1, warm_up 2, "
                             "its defaults); 0 (default): cross-attention gated only"}
    GATE_ONLY = {"sp_interval": 1, "fi_interval": 1, "warm_up": 0}  # self-attention computed at every step
    SELF_CACHING = {"sp_interval": 5, "fi_interval": 1, "warm_up": 2}  # the package's defaults

    def __init__(self, value: float, self_cache: int = 0):
        if not (value >= 1 and float(value).is_integer()):
            raise DiffprobeError(f"tgate gate step must be a whole number of steps >= 1, got {value:g}")
        if self_cache not in (0, 1):
            raise DiffprobeError(f"tgate self_cache must be 0 (cross-attention gated only) or 1 (self-attention "
                                 f"caching too), got {self_cache}")
        super().__init__(float(value))
        self.gate, self.self_cache = int(value), self_cache
        self.schedule = self.SELF_CACHING if self_cache else self.GATE_ONLY
        self.lcm = False  # the call runs no CFG batch: the package's ``lcm`` mode keeps the cached output's shape

    def plan_key(self, step: int):
        # the package's own schedule of what each step caches and reuses, and whether CFG still runs; its loop
        # counts steps after the scheduler's warm-up evaluations (PNDM's extra one) and keeps the initial plain
        # forward through them
        from tgate.tgate_utils import tgate_scheduler

        sched = self.pipe.scheduler
        warm = len(sched.timesteps) - sched.num_inference_steps * getattr(sched, "order", 1)
        cur = step - warm
        if step + 1 <= warm:
            return "plain", True
        ca, sa, keep = tgate_scheduler(cur_step=cur, gate_step=self.gate, **self.schedule)
        return tuple(sorted(ca.items())), tuple(sorted(sa.items())), keep or self.lcm, cur < self.gate

    @contextlib.contextmanager
    def installed(self, pipe):
        import importlib
        import inspect

        loop = importlib.import_module(family_of(pipe).package_loop(pipe, "tgate")).tgate
        cls, gate, schedule, method = type(pipe), self.gate, self.schedule, self
        takes_lcm = "lcm" in inspect.signature(loop).parameters  # the SDXL and PixArt loops

        class Gated(cls):  # type: ignore[misc, valid-type]
            def __call__(self, *args, **kwargs):
                # no CFG batch (a guidance scale of 1 or less, or an LCM denoiser, which takes the scale as an
                # input): the package's LCM mode, which keeps the cached output's batch as it is
                distilled = getattr(denoiser(self).config, "time_cond_proj_dim", None) is not None
                method.lcm = takes_lcm and (kwargs.get("guidance_scale", 1.0) <= 1 or distilled)
                extra = {"lcm": True} if method.lcm else {}
                return loop(self, *args, gate_step=gate, **schedule, **extra, **kwargs)

        Gated.__name__ = cls.__name__
        pipe.__class__ = Gated
        self.pipe = pipe
        try:
            yield self
        finally:
            pipe.__class__ = cls
            for module in denoiser(pipe).modules():  # the package leaves its forward (and cache) on every Attention
                if is_attention(module):
                    vars(module).pop("forward", None)
                    vars(module).pop("cache", None)


VIDEO = ("wan", "cogvideox", "ltx", "mochi", "hunyuanvideo")  # their pipelines set cache contexts and timesteps
VIDEO_MODELS = "the video models (wan21-t2v-*, cogvideox-5b, ltx-video, mochi-1, hunyuan-video and their tiny variants)"
FLUX_FAMILY = ("Flux models (flux-dev, flux-schnell, tiny-flux) and " + VIDEO_MODELS + ": diffusers' cache hooks "
               "need the pipeline to set the cache context and current timestep (those pipelines and "
               "QwenImagePipeline do, among diffprobe's models), and this hook keeps one state across Qwen-Image's "
               "two CFG calls, whose captions differ in length (it fails there)")
FLUX_QWEN = ("Flux and Qwen-Image models (flux-dev, flux-schnell, tiny-flux, qwen-image, tiny-qwen-image) and "
             + VIDEO_MODELS + ": diffusers' cache hooks need the pipeline to set the cache context and current "
             "timestep, which those pipelines do among diffprobe's models")


class DiffusersCache(ReuseMethod):
    """A cache of diffusers' own hooks (``diffusers.hooks``), installed with the transformer's ``enable_cache`` and
    removed with ``disable_cache``. Which blocks or attention layers a step runs follows the hooks' own per-step
    state, so analytic mode traces every step (no replay between steps)."""

    fits = FLUX_FAMILY
    families = ("flux", *VIDEO)

    def plan_key(self, step: int):
        return step

    def config(self, pipe):
        raise NotImplementedError

    @contextlib.contextmanager
    def installed(self, pipe):
        pipe.transformer.enable_cache(self.config(pipe))
        try:
            yield self
        finally:
            pipe.transformer.disable_cache()


def _whole(name: str, what: str, value: float) -> int:
    if not (value >= 1 and float(value).is_integer()):
        raise DiffprobeError(f"{name} {what} must be a whole number of steps >= 1, got {value:g}")
    return int(value)


class _EveryN(DiffusersCache):
    """A cache computing its layers every ``n`` steps (a whole number >= 1; 1 computes every step: dense)."""

    what = "skip range"

    def __init__(self, value: float):
        super().__init__(float(_whole(self.name, self.what, value)))
        self.n = int(value)

    def noop(self) -> bool:
        return self.n == 1


class ThresholdParam:
    """A method skipping work while a measured change stays below ``threshold`` (>= 0; 0 never skips: dense)."""

    name = ""

    def __init__(self, value: float):
        if not value >= 0:
            raise DiffprobeError(f"{self.name} threshold must be >= 0, got {value:g}")
        super().__init__(float(value))

    def noop(self) -> bool:
        return self.value == 0


class FirstBlockCache(ThresholdParam, DiffusersCache):
    """First-block cache (ParaAttention's dynamic caching, diffusers' ``FirstBlockCacheConfig``): every step runs
    the first transformer block; when its output residual changed by less than ``threshold`` (relative L1) since
    the last full step, the remaining blocks are skipped and their cached residual is added. The decision reads
    the activations: measured runs only."""

    name = "first-block-cache"
    param = "threshold"
    param_help = "the first block's relative residual change below which the other blocks are skipped"
    domain, default = ">= 0", "0.05,0.1,0.2"
    data_dependent = True
    fits, families = FLUX_QWEN, ("flux", "qwenimage", *VIDEO)

    def config(self, pipe):
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.value)


class PyramidAttentionBroadcast(_EveryN):
    """Pyramid Attention Broadcast (Zhao et al., 2024; diffusers' ``PyramidAttentionBroadcastConfig``): inside the
    timestep window (100, 800) — the paper's and diffusers' example — each attention layer is computed every
    ``skip`` steps and its output broadcast (reused) in between."""

    name = "pab"
    param = "skip"
    param_help = "each attention layer computed every N steps inside the timestep window (100, 800), reused"
    default = "2,3"
    WINDOW = (100, 800)

    def config(self, pipe):
        from diffusers.hooks import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=self.n,
                                               spatial_attention_timestep_skip_range=self.WINDOW,
                                               current_timestep_callback=lambda: pipe.current_timestep)


class TaylorSeer(_EveryN):
    """TaylorSeer (Liu et al., 2025; diffusers' ``TaylorSeerCacheConfig``): after its first 3 steps (diffusers'
    default warm-up), the transformer's blocks are computed every ``interval`` steps; in between their outputs are
    forecast by a Taylor expansion from the last computed ones (first order, diffusers' default)."""

    name = "taylorseer"
    param = "interval"
    param_help = "blocks computed every N steps, forecast in between"
    default = "2,3,5"
    what = "interval"
    fits = ("Flux, Qwen-Image and HunyuanVideo models (flux-dev, flux-schnell, qwen-image, hunyuan-video and their "
            "tiny variants): diffusers' TaylorSeer hook finds the blocks it forecasts there, and on the other video "
            "models forecasts nothing (their blocks are not the ones it looks for)")
    families = ("flux", "qwenimage", "hunyuanvideo")

    def config(self, pipe):
        from diffusers.hooks import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(cache_interval=self.n)


class FasterCache(_EveryN):
    """FasterCache (Lv et al., 2024; diffusers' ``FasterCacheConfig``): inside the timestep window (-1, 681)
    (diffusers' example), each attention layer is computed every ``skip`` steps; in between its output is
    extrapolated from the last two computed ones, weighted 0.3 (the paper's ``w``). Its classifier-free-guidance
    reuse (the paper's CFG-Cache) is off: Flux is guidance-distilled (nothing to act on), and on the video models
    diffprobe measures the attention reuse alone."""

    name = "faster-cache"
    param = "skip"
    param_help = "each attention layer computed every N steps inside the timestep window (-1, 681), extrapolated"
    default = "2,3"
    WINDOW = (-1, 681)

    def config(self, pipe):
        from diffusers.hooks import FasterCacheConfig

        return FasterCacheConfig(spatial_attention_block_skip_range=self.n,
                                 spatial_attention_timestep_skip_range=self.WINDOW,
                                 current_timestep_callback=lambda: pipe.current_timestep,
                                 attention_weight_callback=lambda _: 0.3, is_guidance_distilled=True,
                                 tensor_format="BCHW")
