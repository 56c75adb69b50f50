"""Mochi 1: an asymmetric joint-attention video DiT (every block projects the video tokens at full width and the T5
caption at a narrower one, attends over both in one sequence, the caption's padding dropped per sample, and gives
each stream its own feed-forward; the last block keeps the video stream only), 3D RoPE over the video tokens, 2x2
spatial patches; a 3D causal VAE that compresses 6x in time and 8x8 in space. CFG runs both branches in one batch of
two; each sample's attention holds its own caption's tokens (the negative prompt's are fewer)."""

from __future__ import annotations

from diffprobe.models.families import Family


def _cpu_masks(pipe):
    """Analytic mode: the caption masks on the CPU, beside the pipeline's meta ones. ``MochiAttnProcessor2_0`` keeps
    each sample's valid caption tokens by ``torch.nonzero`` of its mask, which meta tensors cannot answer: the
    prompts' masks, as the tokenizer makes them (in the order the pipeline batches them: negative prompt first), are
    given to every attention layer instead of the meta copy, so the processor selects on the CPU what a measured run
    selects, and indexes the meta tensors with it. Returns the undo."""
    from diffprobe.patching import Patches

    patches = Patches()
    masks: list = []
    encode = pipe.encode_prompt

    def cpu_mask(prompt, max_sequence_length: int, copies: int):
        import numpy as np

        prompts = [prompt] if isinstance(prompt, str) else prompt
        mask = pipe.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                              add_special_tokens=True, return_tensors="np").attention_mask.astype(bool)
        return np.tile(mask, (copies, 1))

    def encode_prompt(prompt, negative_prompt=None, do_classifier_free_guidance=True, num_videos_per_prompt=1,
                      *args, max_sequence_length=256, **kwargs):
        import numpy as np
        import torch

        out = encode(prompt, negative_prompt, do_classifier_free_guidance, num_videos_per_prompt, *args,
                     max_sequence_length=max_sequence_length, **kwargs)
        mask = cpu_mask(prompt, max_sequence_length, num_videos_per_prompt)
        if do_classifier_free_guidance:
            mask = np.concatenate([cpu_mask(negative_prompt or "", max_sequence_length, num_videos_per_prompt), mask])
        masks[:] = [torch.from_numpy(mask)]  # made in numpy: no op of it is traced (a measured run has none)
        return out

    def swap(module, args, kwargs):
        if masks and kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = masks[0]
        return args, kwargs

    def create_rope(freqs, pos):  # MochiRoPE._create_rope without its autocast, which has no meta device: its math
        import torch  # is in float32 already (autocast to float32 changes nothing there, on the CPU either)

        freqs = torch.einsum("nd,dhf->nhf", pos.to(torch.float32), freqs.to(torch.float32))
        return torch.cos(freqs), torch.sin(freqs)

    patches.set(pipe.transformer.rope, "_create_rope", create_rope)
    patches.set(pipe, "encode_prompt", encode_prompt)
    for module in pipe.transformer.modules():
        if type(module).__name__ == "MochiAttention":
            patches.hook(module.register_forward_pre_hook(swap, with_kwargs=True))
    return patches.restore


class MochiFamily(Family):
    def prepare(self, pipe) -> None:
        """MochiRoPE asks for float32 autocast, which the CPU does not offer (autocast there is bfloat16 or float16):
        PyTorch warns at every step and runs it as written, in float32. The warning is silenced; nothing changes."""
        import warnings

        warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")

    def meta_adapter(self, pipe):
        """The caption masks on the CPU (:func:`_cpu_masks`)."""
        return _cpu_masks(pipe)


FAMILY = MochiFamily(
    name="mochi",
    title="Mochi 1 (asymmetric joint-attention video DiT, T5-XXL encoder, 3D causal VAE)",
    pipelines=("MochiPipeline",),
    denoiser_kind="transformer",
    tiny="tiny-mochi",
    text_keys="end",
    temporal_compression=6,
    count_kwarg="num_videos_per_prompt",
    pos_embed_embeds_patches=False,  # MochiRoPE makes the RoPE tables; patch_embed embeds the patches
    approx_unsupported="Mochi's attention drops each sample's caption padding in a loop of its own",
    min_steps=2,
    min_steps_why="its linear-quadratic sigma schedule divides by half the steps",
    modules={
        "attention": ("MochiAttention",),
        "rope": ("MochiRoPE",),
        "modulation": ("MochiRMSNormZero",),  # adaLN-zero: its linear; its RMS norm stays a norm
        "embed": ("MochiCombinedTimestepCaptionEmbedding",),
        "norm": ("MochiModulatedRMSNorm", "MochiChunkedGroupNorm3D"),
    },
)
