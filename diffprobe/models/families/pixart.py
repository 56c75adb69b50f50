"""PixArt-α / Σ: a diffusion transformer with self- and cross-attention, adaLN-single and a T5 encoder."""

from diffprobe.models.families import Family
from diffprobe.models.schedulers import NOISE_PREDICTION

FAMILY = Family(
    name="pixart",
    title="PixArt-α/Σ (DiT, T5)",
    pipelines=("PixArtAlphaPipeline", "PixArtSigmaPipeline"),
    schedulers=NOISE_PREDICTION,
    denoiser_kind="transformer",
    tiny="tiny-pixart",
    # no aspect-ratio binning (it would change the asked size) and no caption cleaning (it needs packages the
    # pipeline imports lazily; the prompt is used as given)
    call_kwargs={"use_resolution_binning": False, "clean_caption": False},
    # diffusers' PixArt pipelines read a second output of scheduler.step() when num_inference_steps == 1, which
    # their DPM-Solver scheduler does not return (IndexError)
    min_steps=2,
    min_steps_why="it reads a second output its DPM-Solver scheduler does not return",
    package_loops={"tgate": {"PixArtAlphaPipeline": "tgate.PixArt_Alpha", "PixArtSigmaPipeline": "tgate.PixArt_Sigma"}},
    modules={"embed": ("PixArtAlphaCombinedTimestepSizeEmbeddings",),
             "conditioning": ("PixArtAlphaCombinedTimestepSizeEmbeddings",)},
)
