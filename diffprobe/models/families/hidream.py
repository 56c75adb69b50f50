"""HiDream-I1: double-stream then single-stream blocks whose image feed-forward is a sparse mixture of experts (a
softmax router picks the top 2 of 4 SwiGLU experts per token, beside one shared expert), joint attention with the
text keys after the image's, RoPE; four text encoders: CLIP-L and CLIP-G (pooled, with the timestep), T5-XXL and
Llama-3.1-8B, whose hidden states of every layer are read, one per block, as that block's extra text tokens.
Classifier-free guidance runs both branches in one batch (Full: guidance 5; Dev and Fast: 0, none).

Two conventions of diffprobe's:

* **Size.** The pipeline rescales every request to the area of its default size (1024² px), keeping the aspect
  ratio; diffprobe sets that default area to the size asked for, so a run costs the size it names (at 1024x1024,
  the pipeline's own behaviour).
* **Routing.** Which experts a token reaches depends on its values. A measured run records what ran (each routed
  expert's records hold the tokens it got); an analytic run, which has no values, assumes the router's top-k with
  a balanced load: each MoE call's tokens x k assignments spread evenly over the experts (the first ones taking the
  remainder), run as the pipeline runs them, expert by expert. run.json's ``moe`` says which, with the active
  parameters per token beside the total.
"""

from __future__ import annotations

import math

from diffprobe.errors import DiffprobeError
from diffprobe.models.families import Family
from diffprobe.models.families.levels import named_block_level

_BLOCKS = {"double_stream_blocks": "double.", "single_stream_blocks": "single."}
ROUTING_ASSUMED = ("assumed (analytic): the router's top-k with a balanced load, each call's tokens x k assignments "
                   "spread evenly over the experts")
ROUTING_MEASURED = "measured: the experts each token reached in this run"


def balanced_counts(assignments: int, experts: int) -> list[int]:
    """Token assignments per expert under a balanced load: an even split, the first experts taking the rest."""
    base, rest = divmod(assignments, experts)
    return [base + (i < rest) for i in range(experts)]


def _balanced_moe_infer(moe):
    """``MOEFeedForwardSwiGLU.moe_infer`` for meta tensors: the same ops, expert by expert (an argsort of the
    assignments, the token gathered, the expert run, its output weighted and scattered back), with each expert's
    share of the assignments from :func:`balanced_counts` (on meta, a count of the router's choices has no value)."""
    import torch

    def infer(x, flat_expert_indices, flat_expert_weights):
        k = moe.num_activated_experts
        expert_cache = torch.zeros_like(x)
        idxs = flat_expert_indices.argsort()
        token_idxs = idxs // k
        start = 0
        for i, n in enumerate(balanced_counts(flat_expert_indices.numel(), len(moe.experts))):
            if n == 0:
                continue
            exp_token_idx = token_idxs[start:start + n]
            expert_out = moe.experts[i](x[exp_token_idx])
            expert_out.mul_(flat_expert_weights[idxs[start:start + n]])
            expert_cache = expert_cache.to(expert_out.dtype)
            expert_cache.scatter_reduce_(0, exp_token_idx.view(-1, 1).repeat(1, x.shape[-1]), expert_out,
                                         reduce="sum")
            start += n
        return expert_cache

    return infer


def _moe_layers(transformer) -> list:
    return [m for m in transformer.modules() if type(m).__name__ == "MOEFeedForwardSwiGLU"]


class HiDreamFamily(Family):
    def level(self, path: str) -> str:
        """``top``; ``in`` (``x_embedder``); ``embed`` (timestep, pooled, RoPE, caption projections); ``double.i``,
        ``single.i``; ``out`` (``final_layer``); the VAE decoder's levels."""
        return named_block_level(path, _BLOCKS, {"x_embedder": "in", "final_layer": "out"})

    def text_tokens(self, args: tuple, kwargs: dict) -> int:
        """Every joint attention's text keys: T5's tokens, Llama's last layer's and the block's own Llama layer's
        (the single-stream blocks carry the first two on and add their own)."""
        t5, llama = kwargs["encoder_hidden_states_t5"], kwargs["encoder_hidden_states_llama3"]
        return int(t5.shape[1]) + 2 * int(llama.shape[-2])

    def size_problem(self, config: dict, height: int, width: int) -> str | None:
        """A size the transformer cannot take: off the square, it pads the image tokens to a fixed length
        (``max_resolution``), which a larger image overflows."""
        patch = int(config.get("patch_size") or 2) * 8
        side = config.get("max_resolution") or [128, 128]
        most = side[0] * side[1] // (int(config.get("patch_size") or 2) ** 2)
        tokens = (height // patch) * (width // patch)
        if height != width and tokens > most:
            return (f"{height}x{width} is {tokens} image tokens; off the square, HiDream's transformer pads its image "
                    f"tokens to {most} (its max_resolution), so a non-square image may have at most {most} "
                    f"(square images any number)")
        return None

    def set_size(self, pipe, height: int, width: int) -> None:
        """The pipeline's default area made the size asked for (see the module's docstring), checked against the
        pipeline's own rescaling arithmetic."""
        scale, division = pipe.vae_scale_factor, pipe.vae_scale_factor * 2
        side = math.sqrt(height * width) / scale
        for nudge in (1.0, 1 + 1e-12, 1 + 1e-9):  # the rescale floors, so a hair above 1 keeps the size
            s_max = (side * nudge * scale) ** 2
            ratio = math.sqrt(s_max / (width * height))
            got = (int(height * ratio // division * division), int(width * ratio // division * division))
            if got == (height, width):
                pipe.default_sample_size = side * nudge
                return
        raise DiffprobeError(f"internal: HiDream's pipeline would not render {height}x{width}")

    def meta_adapter(self, pipe):
        """Every MoE feed-forward's dispatch under the balanced-load assumption (:func:`_balanced_moe_infer`), and
        the patch grid's size kept on the CPU (the transformer makes it a tensor on the latents' device and reads
        it back to unpatchify; on meta it has no value)."""
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        from diffprobe.patching import Patches

        patches = Patches()
        for moe in _moe_layers(pipe.transformer):
            patches.set(moe, "moe_infer", _balanced_moe_infer(moe))
        transformer = pipe.transformer
        patchify = transformer.patchify

        def cpu_sizes_patchify(hidden_states):
            out = list(patchify(hidden_states))
            p = transformer.config.patch_size
            with _disable_current_modes():  # made outside the tracer: the pipeline made (and traced) it already
                sizes = torch.tensor([hidden_states.shape[-2] // p, hidden_states.shape[-1] // p], dtype=out[2].dtype)
                out[2] = sizes.repeat(out[2].shape[0], 1)
            return tuple(out)

        patches.set(transformer, "patchify", cpu_sizes_patchify)
        return patches.restore

    def moe(self, pipe, analytic: bool) -> dict:
        """The mixture of experts: layers, experts, top-k, parameters in all and active per token, routing."""
        def count_params(module) -> int:
            return sum(p.numel() for p in module.parameters())

        layers = _moe_layers(pipe.transformer)
        experts, k = len(layers[0].experts), layers[0].num_activated_experts
        idle = sum(count_params(m.experts) * (experts - k) // experts for m in layers)
        total = count_params(pipe.transformer)
        return {"layers": len(layers), "experts": experts, "top_k": k, "shared_experts": 1,
                "params_total": total, "params_active_per_token": total - idle,
                "routing": ROUTING_ASSUMED if analytic else ROUTING_MEASURED}


FAMILY = HiDreamFamily(
    name="hidream",
    title="HiDream-I1 (sparse MoE DiT, four text encoders)",
    pipelines=("HiDreamImagePipeline",),
    denoiser_kind="transformer",
    tiny="tiny-hidream",
    text_keys="end",
    two_streams=True,
    pos_embed_embeds_patches=False,
    joint_paths=(".double_stream_blocks.", ".single_stream_blocks."),  # text tokens in the sequence, after the image's
    image_levels=("top", "in", "out", "double.", "single."),
    path_roles={"adaLN_modulation": "modulation", "shared_experts": "moe_shared", "experts.*": "moe_expert"},
    projections={"to_q_t": "qkv", "to_k_t": "qkv", "to_v_t": "qkv", "to_out": "out", "to_out_t": "out"},  # text: *_t
    modules={  # the transformer's own classes, and its Llama encoder's
        "moe": ("MOEFeedForwardSwiGLU",), "moe_router": ("MoEGate",),
        "ffn": ("HiDreamImageFeedForwardSwiGLU", "LlamaMLP"),
        "attention": ("HiDreamAttention", "LlamaAttention"),
        "embed": ("HiDreamImageTimestepEmbed", "HiDreamImagePooledEmbed"),
        "conditioning": ("HiDreamImageTimestepEmbed", "HiDreamImagePooledEmbed"),
        "rope": ("HiDreamImageEmbedND", "LlamaRotaryEmbedding"), "norm": ("LlamaRMSNorm",),
        "rope_function": (("diffusers.", "apply_rope"), ("transformers.models.llama.", "apply_rotary_pos_emb")),
    },
)
