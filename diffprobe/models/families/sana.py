"""Sana: a linear-attention DiT (ReLU linear self-attention, softmax cross-attention) with a Gemma-2 encoder and a
32x deep-compression VAE; the pipeline makes its latents in fp32."""

from diffprobe.models.families import Family

FAMILY = Family(
    name="sana",
    title="Sana (linear-attention DiT, Gemma-2)",
    pipelines=("SanaPipeline",),
    schedulers=("dpm++",),  # its flow DPM-Solver (use_flow_sigmas, flow_shift)
    denoiser_kind="transformer",
    tiny="tiny-sana",
    latent_dtype="float32",
    call_kwargs={"use_resolution_binning": False, "clean_caption": False},
    modules={  # the linear-attention transformer, and its Gemma-2 text encoder
        "attention": ("SanaMultiscaleLinearAttention", "Gemma2Attention"),
        "linear_attention": ("SanaMultiscaleLinearAttention",),
        "linear_attention_processor": ("SanaLinearAttnProcessor2_0", "SanaMultiscaleAttnProcessor2_0"),
        "ffn": ("GLUMBConv", "Gemma2MLP"), "modulation": ("SanaModulatedNorm",),
        "norm": ("Gemma2RMSNorm",), "embed": ("Gemma2TextScaledWordEmbedding",),
        "rope": ("Gemma2RotaryEmbedding",), "rope_function": (("transformers.models.gemma2.", "apply_rotary_pos_emb"),),
    },
    no_softmax="its self-attention is linear attention (no softmax probabilities to drop) and its cross-attention "
               "carries a key-padding mask, which the methods leave dense",
)
