"""TeaCache (Liu et al., CVPR 2025) as a step-level reuse setting, from the paper and its authors' per-model recipes
(FLUX.1, HunyuanVideo, Wan 2.1): no package ships it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from diffprobe.methods.reuse import ReuseMethod, ThresholdParam
from diffprobe.models.families import family_of


@dataclass(frozen=True)
class TeaRecipe:
    """How TeaCache applies to a family's transformer: its block lists in call order, the order of a block's
    outputs (``context_hidden``: Flux's (caption, image); ``hidden_context``: HunyuanVideo's; ``hidden``: Wan's, the
    caption unchanged), the indicator (``norm1``: the first block's adaLN-modulated input, computed once more;
    ``temb``: the condition embedder's timestep embedding, already computed), the rescaling polynomial (highest
    power first; ``wide``: another for transformers of at least ``wide_dim`` channels), and whether each CFG
    branch keeps its own state (Wan's two calls per step)."""

    blocks: tuple[str, ...]
    outputs: str
    indicator: str
    coefficients: tuple[float, ...]
    wide: tuple[float, ...] = ()
    wide_dim: int = 0
    per_branch: bool = False


# the authors' fitted polynomials (TeaCache's repository: TeaCache4FLUX, TeaCache4HunyuanVideo, TeaCache4Wan2.1
# without its "retention steps": the 1.3B's, and the 14B's for 5120 channels)
TEA_RECIPES = {
    "flux": TeaRecipe(("transformer_blocks", "single_transformer_blocks"), "context_hidden", "norm1",
                      (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)),
    "hunyuanvideo": TeaRecipe(("transformer_blocks", "single_transformer_blocks"), "hidden_context", "norm1",
                              (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02)),
    "wan": TeaRecipe(("blocks",), "hidden", "temb",
                     (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
                     (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01), 5120, True),
}


class TeaCache(ThresholdParam, ReuseMethod):
    """TeaCache (Liu et al., CVPR 2025, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model"),
    implemented here from the paper and its authors' recipes (FLUX, HunyuanVideo, Wan 2.1), since no package ships
    it: at each step an indicator is read (Flux and HunyuanVideo: the first block's timestep-modulated input, its
    adaLN norm computed once more and counted as the method's own ops; Wan: the timestep embedding); its relative L1
    change since the previous step, rescaled by the authors' fitted polynomial for the model, is accumulated; while
    the sum stays below ``threshold`` every transformer block is skipped and the residual the blocks added at the
    last computed step is added instead. The first and last steps always compute. Wan's two CFG calls per step keep
    a state each (the recipe's). The decision reads the activations: measured runs only."""

    name = "teacache"
    param = "threshold"
    param_help = "the accumulated rescaled change of the modulated input below which every block is skipped"
    domain, default = ">= 0", "0.05,0.1,0.2"
    fits = ("Flux, HunyuanVideo and Wan 2.1 models (flux-dev, flux-schnell, hunyuan-video, wan21-t2v-1.3b, "
            "wan21-t2v-14b and their tiny variants): its rescaling polynomials are fitted to those")
    families = ("flux", "hunyuanvideo", "wan")
    data_dependent = True

    def plan_key(self, step: int):
        return step

    @staticmethod
    def _polynomial(coefficients, x: float) -> float:
        out = 0.0
        for c in coefficients:
            out = out * x + c
        return out

    def _rescale(self, x: float) -> float:
        return self._polynomial(self.coefficients, x)

    @contextlib.contextmanager
    def installed(self, pipe):
        """Every block of the transformer wrapped (:class:`_TeaRun`) inside the block; the decisions per call in
        ``decisions``."""
        from diffprobe.patching import Patches

        recipe = TEA_RECIPES[family_of(pipe).name]
        transformer = pipe.transformer
        width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.coefficients = recipe.wide if recipe.wide and width >= recipe.wide_dim else recipe.coefficients
        self.decisions: list[bool] = []  # per denoiser call: whether the blocks ran
        patches = Patches()
        _TeaRun(self, pipe, recipe, patches)
        try:
            yield self
        finally:
            patches.restore()


class _TeaRun:
    """One installation of :class:`TeaCache` on a pipeline: the state per CFG branch, the decision at the first
    block, and every block's forward wrapped (skipped blocks pass their inputs through; the last adds the cached
    residual)."""

    def __init__(self, method: TeaCache, pipe, recipe: TeaRecipe, patches):
        self.method, self.pipe, self.recipe = method, pipe, recipe
        transformer = pipe.transformer
        self.blocks = [b for name in recipe.blocks for b in getattr(transformer, name)]
        self.first, self.last = self.blocks[0], self.blocks[-1]
        self.states: dict[int, dict] = {}
        self.calls, self.skip, self.input, self.temb, self.branch = 0, False, None, None, 0
        if recipe.indicator == "temb":  # the condition embedder's first output: the timestep embedding
            patches.hook(transformer.condition_embedder.register_forward_hook(
                lambda _m, _a, out: setattr(self, "temb", out[0])))
        for b in self.blocks:
            patches.set(b, "forward", self._wrapped(b, b.forward))

    def decide(self, hidden_states, temb) -> bool:
        """Whether this call computes its blocks (the recipe's indicator, its rescaled change accumulated)."""
        pipe, recipe, method = self.pipe, self.recipe, self.method
        n = int(getattr(pipe, "_num_timesteps", 0) or 0)
        branches = 2 if recipe.per_branch and getattr(pipe, "do_classifier_free_guidance", False) else 1
        self.branch = branch = self.calls % branches
        self.calls += 1
        state = self.states.setdefault(branch, {"count": 0, "accumulated": 0.0, "previous": None, "residual": None})
        indicator = self.first.norm1(hidden_states, emb=temb)[0] if recipe.indicator == "norm1" else self.temb
        count, previous = state["count"], state["previous"]
        if count == 0 or count == n - 1 or previous is None or state["residual"] is None:
            compute, state["accumulated"] = True, 0.0
        else:
            rel = float(((indicator - previous).abs().mean() / previous.abs().mean()).float())
            state["accumulated"] += method._rescale(rel)
            compute = state["accumulated"] >= method.value
            if compute:
                state["accumulated"] = 0.0
        state["previous"] = indicator
        state["count"] = count + 1 if n == 0 or count + 1 < n else 0
        method.decisions.append(compute)
        return compute

    def _outputs(self, hidden, context):
        """A skipped block's outputs in the order the family's blocks return them."""
        return {"context_hidden": (context, hidden), "hidden_context": (hidden, context)}.get(self.recipe.outputs,
                                                                                            hidden)

    def _image(self, out):
        """The image (video) stream of a block's outputs."""
        order = self.recipe.outputs
        return out[1] if order == "context_hidden" else out[0] if order == "hidden_context" else out

    def _wrapped(self, block, original):
        def forward(*args, **kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            if block is self.first:
                self.skip = not self.decide(hidden, kwargs.get("temb", args[2] if len(args) > 2 else None))
                self.input = hidden
            state = self.states[self.branch]
            if self.skip:  # every block passes its inputs through; the last adds the cached residual
                return self._outputs(hidden + state["residual"] if block is self.last else hidden, context)
            out = original(*args, **kwargs)
            if block is self.last:
                state["residual"] = self._image(out) - self.input
            return out

        return forward
