"""Independent parameter counts of the SD architectures and the diffusion transformers, from layer shapes alone.

Written from the published architecture descriptions (block layout, channel widths, transformer depth), not
from diffprobe or diffusers code, so the tests can check the embedded configs against them.
"""


def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def norm(c):
    return 2 * c


def resnet(cin, cout, temb=None):
    n = norm(cin) + conv(cin, cout, 3) + norm(cout) + conv(cout, cout, 3)
    if temb:
        n += linear(temb, cout)
    if cin != cout:
        n += conv(cin, cout, 1)
    return n


def basic_transformer_block(c, ctx):
    attn1 = 3 * linear(c, c, bias=False) + linear(c, c)
    attn2 = linear(c, c, bias=False) + 2 * linear(ctx, c, bias=False) + linear(c, c)
    ff = linear(c, 8 * c) + linear(4 * c, c)  # GEGLU: c -> 2*4c, then 4c -> c
    return 3 * norm(c) + attn1 + attn2 + ff


def transformer2d(c, ctx, depth):
    # GroupNorm + proj_in + blocks + proj_out (1x1 conv or linear: same count)
    return norm(c) + 2 * linear(c, c) + depth * basic_transformer_block(c, ctx)


def unet(channels, attn_levels, ctx, layers=2, depth=None, add_embed_in=None):
    """SD-style UNet2DConditionModel. ``attn_levels[i]``: level i has transformers; ``depth[i]``: their depth."""
    depth = depth or [1] * len(channels)
    temb = 4 * channels[0]
    n = conv(4, channels[0], 3) + linear(channels[0], temb) + linear(temb, temb)
    if add_embed_in:
        n += linear(add_embed_in, temb) + linear(temb, temb)
    cin = channels[0]
    for i, c in enumerate(channels):
        for _ in range(layers):
            n += resnet(cin, c, temb) + (transformer2d(c, ctx, depth[i]) if attn_levels[i] else 0)
            cin = c
        if i < len(channels) - 1:
            n += conv(c, c, 3)
    c = channels[-1]
    n += 2 * resnet(c, c, temb) + transformer2d(c, ctx, depth[-1])
    rev, rattn, rdepth = channels[::-1], attn_levels[::-1], depth[::-1]
    prev = rev[0]
    for i, c in enumerate(rev):
        skip_in = rev[min(i + 1, len(rev) - 1)]
        for j in range(layers + 1):
            skip = skip_in if j == layers else c
            rin = prev if j == 0 else c
            n += resnet(rin + skip, c, temb) + (transformer2d(c, ctx, rdepth[i]) if rattn[i] else 0)
        if i < len(rev) - 1:
            n += conv(c, c, 3)
        prev = c
    return n + norm(channels[0]) + conv(channels[0], 4, 3)


def vae(channels=(128, 256, 512, 512), layers=2, latent=4, quant_convs=True):
    attn = lambda c: norm(c) + 4 * linear(c, c)  # noqa: E731
    mid = lambda c: 2 * resnet(c, c) + attn(c)  # noqa: E731
    enc = conv(3, channels[0], 3)
    cin = channels[0]
    for i, c in enumerate(channels):
        for _ in range(layers):
            enc += resnet(cin, c)
            cin = c
        if i < len(channels) - 1:
            enc += conv(c, c, 3)
    enc += mid(channels[-1]) + norm(channels[-1]) + conv(channels[-1], 2 * latent, 3)
    dec = conv(latent, channels[-1], 3) + mid(channels[-1])
    prev = channels[-1]
    rev = channels[::-1]
    for i, c in enumerate(rev):
        for j in range(layers + 1):
            dec += resnet(prev if j == 0 else c, c)
        if i < len(rev) - 1:
            dec += conv(c, c, 3)
        prev = c
    dec += norm(channels[0]) + conv(channels[0], 3, 3)
    return enc + dec + (conv(2 * latent, 2 * latent, 1) + conv(latent, latent, 1) if quant_convs else 0)


def clip_text(hidden, inter, layers, vocab=49408, positions=77, projection=None):
    block = 2 * norm(hidden) + 4 * linear(hidden, hidden) + linear(hidden, inter) + linear(inter, hidden)
    n = vocab * hidden + positions * hidden + layers * block + norm(hidden)
    return n + (linear(hidden, projection, bias=False) if projection else 0)


# -- text encoders of the diffusion transformers ----------------------------------------------------------------
def t5_encoder(d, ff, heads, d_kv, layers, vocab=32128, buckets=32):
    """T5 v1.1 encoder: token embedding, per layer self-attention (q, k, v, o without bias) and a gated-GELU FFN
    (wi_0, wi_1, wo), two RMS norms (weight only) per layer and one at the end, relative position buckets in the
    first layer."""
    inner = heads * d_kv
    block = 4 * d * inner + 2 * d * ff + ff * d + 2 * d
    return vocab * d + layers * block + buckets * heads + d


def gemma2(d, ff, heads, kv_heads, head_dim, layers, vocab=256000):
    """Gemma 2 decoder stack: embedding, per layer grouped-query attention (no bias), a gated FFN (gate, up,
    down) and four RMS norms (weight only), a final norm."""
    attn = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    return vocab * d + layers * (attn + 3 * d * ff + 4 * d) + d


# -- diffusion transformers --------------------------------------------------------------------------------------
def timestep_mlp(d, freq=256):
    return linear(freq, d) + linear(d, d)


def pixart(heads, head_dim, layers, caption, in_ch=4, out_ch=8, patch=2, conditions=False):
    """PixArt-α/Σ: patch-embedding conv, adaLN-single (timestep MLP, optional size/aspect embedders of D/3, one
    6D linear), caption MLP, blocks of self-attention, cross-attention and a 4x GELU FFN (biases everywhere, norms
    without affine) with a 6D shift/scale/gate table, a final 2D table and linear."""
    d = heads * head_dim
    n = conv(in_ch, d, patch)
    n += timestep_mlp(d) + linear(d, 6 * d)
    if conditions:
        n += 2 * timestep_mlp(d // 3)
    n += linear(caption, d) + linear(d, d)
    block = 4 * linear(d, d) + 4 * linear(d, d) + linear(d, 4 * d) + linear(4 * d, d) + 6 * d
    return n + layers * block + 2 * d + linear(d, patch * patch * out_ch)


def sd3(heads, head_dim, layers, joint, pooled, caption_dim, in_ch=16, patch=2, qk_norm=False, dual=0):
    """SD3 MM-DiT: patch conv, timestep and pooled-text MLPs, context linear, joint blocks (adaLN-Zero for both
    streams, image and text q/k/v/out, 4x GELU FFNs for both; the last block's text stream ends after the
    attention: a 2D adaLN and no text output or FFN), optional per-head qk RMS norms, final 2D adaLN and linear.
    SD3.5's MMDiT-X: the first ``dual`` blocks add an image-only self-attention (q/k/v/out, its own qk norms) whose
    shift/scale/gate come from the image stream's adaLN, which so gives 9D instead of 6D."""
    d = heads * head_dim
    n = conv(in_ch, d, patch) + timestep_mlp(d) + linear(pooled, d) + linear(d, d) + linear(joint, caption_dim)
    ff = linear(d, 4 * d) + linear(4 * d, d)
    qk = 4 * head_dim if qk_norm else 0
    block = 2 * linear(d, 6 * d) + 8 * linear(d, d) + 2 * ff + qk
    last = linear(d, 6 * d) + linear(d, 2 * d) + 7 * linear(d, d) + ff + qk
    extra = linear(d, 9 * d) - linear(d, 6 * d) + 4 * linear(d, d) + qk // 2
    return n + (layers - 1) * block + last + dual * extra + linear(d, 2 * d) + linear(d, patch * patch * in_ch)


def flux(heads, head_dim, double, single, joint, pooled, in_ch=64, guidance=True):
    """Flux.1: input linear, timestep (+ guidance) and pooled-text MLPs, context linear; double-stream blocks
    (adaLN-Zero x2, image and text q/k/v/out, qk RMS norms on both, 4x GELU FFNs x2); single-stream blocks (3D
    adaLN, q/k/v, qk norms, a 4x MLP input and one output linear over attention and MLP together); final 2D
    adaLN and linear."""
    d = heads * head_dim
    n = linear(in_ch, d) + timestep_mlp(d) * (2 if guidance else 1) + linear(pooled, d) + linear(d, d)
    n += linear(joint, d)
    ff = linear(d, 4 * d) + linear(4 * d, d)
    dbl = 2 * linear(d, 6 * d) + 8 * linear(d, d) + 4 * head_dim + 2 * ff
    sgl = linear(d, 3 * d) + 3 * linear(d, d) + 2 * head_dim + linear(d, 4 * d) + linear(5 * d, d)
    return n + double * dbl + single * sgl + linear(d, 2 * d) + linear(d, in_ch)


def sana(heads, head_dim, cross_heads, cross_head_dim, layers, caption, mlp_ratio=2.5, in_ch=32):
    """Sana: 1x1 patch conv, adaLN-single, caption MLP and RMS norm; blocks of ReLU linear self-attention (q, k, v
    without bias, out with), cross-attention (biases), Mix-FFN (1x1 conv to 2 x hidden, 3x3 depthwise, gated to
    hidden, 1x1 conv back without bias) and a 6D table; final 2D table and linear."""
    d = heads * head_dim
    dc = cross_heads * cross_head_dim
    hidden = int(d * mlp_ratio)
    n = conv(in_ch, d, 1) + timestep_mlp(d) + linear(d, 6 * d) + linear(caption, d) + linear(d, d) + d
    attn1 = 3 * linear(d, d, bias=False) + linear(d, d)
    attn2 = linear(d, dc) + 2 * linear(d, dc) + linear(dc, d)
    ffn = conv(d, 2 * hidden, 1) + 2 * hidden * 9 + 2 * hidden + conv(hidden, d, 1, bias=False)
    return n + layers * (attn1 + attn2 + ffn + 6 * d) + 2 * d + linear(d, in_ch)


def rms(c):
    return c  # RMSNorm: one scale per channel


def qwen3(d, ff, heads, kv_heads, head_dim, layers, vocab=151936):
    """Qwen3 decoder as a text encoder (no LM head): token embedding; per layer q (heads x head_dim), k and v
    (kv_heads x head_dim), o, all without bias, per-head q and k RMS norms, a SwiGLU MLP (gate, up, down), two RMS
    norms; a final RMS norm."""
    attn = linear(d, heads * head_dim, False) + 2 * linear(d, kv_heads * head_dim, False) + linear(
        heads * head_dim, d, False) + 2 * rms(head_dim)
    mlp = 2 * linear(d, ff, False) + linear(ff, d, False)
    return vocab * d + layers * (attn + mlp + 2 * rms(d)) + rms(d)


def zimage(dim, heads, layers, refiners, caption, patch=2, in_ch=16, adaln=256, t_mid=1024):
    """Z-Image's single-stream DiT: patch embedding (linear) and a final layer (LayerNorm without affine, linear,
    adaLN of 1D from the timestep embedding); a timestep MLP (256 -> 1024 -> adaLN width); a caption embedder (RMS
    norm, linear); blocks of attention (q, k, v, out without bias, per-head qk RMS norms), a SwiGLU FFN of 8/3 D
    (no bias) and four RMS norms, with a 4D adaLN linear in the modulated blocks (noise refiner, main layers; the
    context refiner has none); pad tokens for image and caption."""
    head = dim // heads
    ff = int(dim / 3 * 8)
    block = 4 * linear(dim, dim, False) + 2 * rms(head) + 2 * linear(dim, ff, False) + linear(ff, dim, False) + 4 * rms(
        dim)
    mod = linear(min(dim, adaln), 4 * dim)
    patch_in = patch * patch * in_ch
    n = linear(patch_in, dim) + linear(dim, patch_in) + linear(min(dim, adaln), dim)
    n += linear(256, t_mid) + linear(t_mid, min(dim, adaln))
    n += rms(caption) + linear(caption, dim)
    n += (layers + refiners) * (block + mod) + refiners * block
    return n + 2 * dim


def flux2(heads, head_dim, double, single, joint, in_ch=128, guidance_ch=256, mlp_ratio=3.0):
    """FLUX.2's MMDiT (no biases anywhere): timestep and guidance MLPs, three modulation linears computed once per
    step for all blocks (6D for each stream of the double blocks, 3D for the single ones), input and context linears;
    double blocks with image and text q/k/v/out, qk RMS norms on both streams and SwiGLU FFNs (in: 2 x mlp_ratio D,
    out from mlp_ratio D) for both; single blocks with one fused q/k/v + MLP-in projection (3D + 2 x mlp D), qk RMS
    norms and one output linear over attention and MLP (D + mlp D -> D); final 2D adaLN and output linear."""
    d = heads * head_dim
    hidden = int(d * mlp_ratio)
    lin = lambda i, o: linear(i, o, False)  # noqa: E731
    n = 2 * (lin(guidance_ch, d) + lin(d, d)) + 2 * lin(d, 6 * d) + lin(d, 3 * d) + lin(in_ch, d) + lin(joint, d)
    ff = lin(d, 2 * hidden) + lin(hidden, d)
    dbl = 8 * lin(d, d) + 4 * head_dim + 2 * ff
    sgl = lin(d, 3 * d + 2 * hidden) + 2 * head_dim + lin(d + hidden, d)
    return n + double * dbl + single * sgl + lin(d, 2 * d) + lin(d, in_ch)


def mistral3(d, ff, heads, kv_heads, head_dim, layers, vision, vision_ff, vision_heads, vision_layers, patch=14,
             merge=2, vocab=131072):
    """Mistral-3 (Mistral-Small-3.1): the Mistral language model (as qwen3 without qk norms) with an untied LM head,
    the Pixtral vision tower (patch conv, pre-norm, blocks of q/k/v/o and a SwiGLU MLP with two RMS norms; no
    biases) and the projector (RMS norm, a patch merger over merge x merge patches, two linears)."""
    attn = linear(d, heads * head_dim, False) + 2 * linear(d, kv_heads * head_dim, False) + linear(
        heads * head_dim, d, False)
    lang = vocab * d + layers * (attn + 2 * linear(d, ff, False) + linear(ff, d, False) + 2 * rms(d)) + rms(d)
    v = vision
    vis = 3 * v * patch * patch + rms(v) + vision_layers * (4 * linear(v, v, False) + 2 * linear(v, vision_ff, False)
                                                           + linear(vision_ff, v, False) + 2 * rms(v))
    proj = rms(v) + linear(v * merge * merge, v, False) + linear(v, d, False) + linear(d, d, False)
    return lang + vis + proj + linear(d, vocab, False)


def qwen_image(heads, head_dim, layers, joint, in_ch=64, out_ch=16, patch=2, freq=256):
    """Qwen-Image's double-stream MMDiT (every linear with a bias): a timestep MLP (256 -> D -> D); the caption's RMS
    norm and projection; the image tokens' input linear; per block a 6D modulation linear per stream, image and text
    q/k/v/out, per-head RMS norms of both streams' q and k, and a GELU feed-forward (D -> 4D -> D) per stream
    (LayerNorms without affine); the final adaLN (D -> 2D) and output linear."""
    d = heads * head_dim
    n = linear(freq, d) + linear(d, d) + rms(joint) + linear(in_ch, d) + linear(joint, d)
    block = 2 * linear(d, 6 * d) + 8 * linear(d, d) + 4 * rms(head_dim) + 2 * (linear(d, 4 * d) + linear(4 * d, d))
    return n + layers * block + linear(d, 2 * d) + linear(d, patch * patch * out_ch)


def qwen25_vl(d, ff, heads, kv_heads, head_dim, layers, vision, vision_ff, vision_layers, out_hidden, patch=14,
              temporal=2, merge=2, vocab=152064):
    """Qwen2.5-VL (as ``Qwen2_5_VLForConditionalGeneration``): the Qwen2 language model (q, k, v with biases, o
    without; a SwiGLU MLP without biases; two RMS norms per layer; a final one) with an untied LM head; the vision
    tower: a bias-free 3D patch conv (temporal x patch x patch), blocks of fused qkv and output linears, a SwiGLU MLP
    (with biases) and two RMS norms, and the patch merger (RMS norm, merge x merge patches -> linear -> GELU ->
    linear to the language model's width)."""
    attn = linear(d, heads * head_dim) + 2 * linear(d, kv_heads * head_dim) + linear(heads * head_dim, d, False)
    lang = vocab * d + layers * (attn + 2 * linear(d, ff, False) + linear(ff, d, False) + 2 * rms(d)) + rms(d)
    v, m = vision, vision * merge * merge
    vis = 3 * temporal * patch * patch * v + vision_layers * (
        2 * rms(v) + linear(v, 3 * v) + linear(v, v) + 2 * linear(v, vision_ff) + linear(vision_ff, v))
    vis += rms(v) + linear(m, m) + linear(m, out_hidden)
    return lang + vis + linear(d, vocab, False)


def llama(d, ff, heads, kv_heads, head_dim, layers, vocab=128256):
    """Llama (as ``LlamaForCausalLM``): token embedding; per layer q, k, v, o without bias, a SwiGLU MLP (gate, up,
    down) without bias and two RMS norms; a final RMS norm; an untied LM head."""
    attn = linear(d, heads * head_dim, False) + 2 * linear(d, kv_heads * head_dim, False) + linear(
        heads * head_dim, d, False)
    mlp = 2 * linear(d, ff, False) + linear(ff, d, False)
    return vocab * d + layers * (attn + mlp + 2 * rms(d)) + rms(d) + linear(d, vocab, False)


def swiglu_hidden(hidden, multiple=256):
    """HiDream's SwiGLU width: two thirds of ``hidden``, rounded up to a multiple of 256."""
    h = int(2 * hidden / 3)
    return multiple * ((h + multiple - 1) // multiple)


def hidream(heads, head_dim, double, single, llama_ch, t5_ch, pooled, experts=4, in_ch=16, patch=2):
    """HiDream-I1's transformer: timestep and pooled-text MLPs (-> D -> D), the patch linear, one bias-free caption
    projection per block (from Llama's width) and one for T5; double blocks with a 12D adaLN linear, image and text
    q/k/v/out (with biases) and q/k RMS norms over D per stream, an image MoE feed-forward and a text SwiGLU
    (2/3 of 4D, rounded up to 256); single blocks with a 6D adaLN, one stream's attention and the MoE; the MoE: a
    shared SwiGLU of half the width, ``experts`` routed SwiGLUs, a bias-free gate (experts x D); the final adaLN
    (2D) and output linear."""
    d = heads * head_dim
    swiglu = lambda hidden: 3 * d * swiglu_hidden(hidden)  # noqa: E731
    moe = swiglu(4 * d // 2) + experts * swiglu(4 * d) + experts * d
    attn = 4 * linear(d, d) + 2 * d
    n = linear(256, d) + linear(d, d) + linear(pooled, d) + linear(d, d) + linear(patch * patch * in_ch, d)
    n += (double + single) * linear(llama_ch, d, False) + linear(t5_ch, d, False)
    n += double * (linear(d, 12 * d) + 2 * attn + moe + swiglu(4 * d))
    n += single * (linear(d, 6 * d) + attn + moe)
    return n + linear(d, 2 * d) + linear(d, patch * patch * in_ch)


def umt5_encoder(d, ff, heads, d_kv, layers, vocab=256384, buckets=32):
    """UMT5 encoder: as T5 v1.1's (:func:`t5_encoder`), but every layer has its own relative position buckets."""
    return t5_encoder(d, ff, heads, d_kv, layers, vocab, buckets) + (layers - 1) * buckets * heads


def wan(heads, head_dim, layers, ffn, text=4096, in_ch=16, out_ch=16, patch=(1, 2, 2), freq=256):
    """Wan 2.1's video DiT (every linear with a bias): a 3D patch conv (frames x height x width patch); a timestep MLP
    (freq -> D -> D) and its 6D projection; the caption MLP (text -> D -> D, GELU); per block self- and cross-attention
    (q, k, v, out, and RMS norms of q and k over all heads), the cross-attention's input LayerNorm (affine), a GELU
    feed-forward (D -> ffn -> D), a 6D shift/scale/gate table (its other two LayerNorms without affine); the final
    2D table and output linear (D -> out channels x patch volume)."""
    d = heads * head_dim
    volume = patch[0] * patch[1] * patch[2]
    n = in_ch * volume * d + d
    n += linear(freq, d) + linear(d, d) + linear(d, 6 * d) + linear(text, d) + linear(d, d)
    attention = 4 * linear(d, d) + 2 * rms(d)
    block = 2 * attention + norm(d) + linear(d, ffn) + linear(ffn, d) + 6 * d
    return n + layers * block + 2 * d + linear(d, out_ch * volume)


def cogvideox(heads, head_dim, layers, time=512, text=4096, in_ch=16, out_ch=16, patch=2):
    """CogVideoX's DiT (every linear with a bias): the patch conv and the caption's projection; a timestep MLP
    (D -> time -> time); per block two "expert" adaLN-zero norms (time -> 6D, both streams' shift, scale and gate,
    and an affine LayerNorm), q, k, v, out, per-head affine LayerNorms of q and k, a GELU feed-forward (D -> 4D -> D);
    the final affine LayerNorm, the output adaLN (time -> 2D, an affine LayerNorm) and the output linear."""
    d = heads * head_dim
    n = conv(in_ch, d, patch) + linear(text, d) + linear(d, time) + linear(time, time)
    block = 2 * (linear(time, 6 * d) + norm(d)) + 4 * linear(d, d) + 2 * norm(head_dim) + linear(d, 4 * d) + linear(
        4 * d, d)
    return n + layers * block + norm(d) + linear(time, 2 * d) + norm(d) + linear(d, patch * patch * out_ch)


def ltx_video(heads, head_dim, layers, cross, caption=4096, channels=128, freq=256):
    """LTX-Video's DiT (every linear with a bias): the token projection (channels -> D); adaLN-single (a timestep
    MLP, freq -> D -> D, and one 6D linear); the caption MLP (caption -> D -> D); per block self-attention (q, k, v,
    out) and cross-attention (q from D, k and v from ``cross``), each with RMS norms of q and k across heads, a GELU
    feed-forward (D -> 4D -> D) and a 6D table (its RMS norms without affine); the final 2D table and the output
    linear (D -> channels)."""
    d = heads * head_dim
    n = linear(channels, d) + linear(freq, d) + linear(d, d) + linear(d, 6 * d) + linear(caption, d) + linear(d, d)
    self_attn = 4 * linear(d, d) + 2 * rms(d)
    cross_attn = 2 * linear(d, d) + 2 * linear(cross, d) + 2 * rms(d)
    block = self_attn + cross_attn + linear(d, 4 * d) + linear(4 * d, d) + 6 * d
    return n + layers * block + 2 * d + linear(d, channels)


def mochi(heads, head_dim, layers, context=1536, text=4096, in_ch=12, patch=2, freq=256):
    """Mochi 1's asymmetric DiT: the patch conv; a timestep MLP (freq -> D -> D); the caption's attention pool (a
    fused k|v, q and output linear, text -> D) and its projection to the context width; the RoPE frequencies (3 axes
    x heads x head_dim / 2); per block adaLN-zero linears (D -> 4D for the video, D -> 4 x context for the caption,
    D -> context in the last block), bias-free q, k, v from D and from the context, per-head RMS norms of q and k of
    both streams, the output linears (to D, and back to the context but in the last block), bias-free SwiGLU
    feed-forwards (inner 8/3 of the width, floored) for the video and, but in the last block, the caption; the final
    adaLN (D -> 2D) and output linear."""
    d = heads * head_dim
    n = conv(in_ch, d, patch) + linear(freq, d) + linear(d, d)
    n += linear(text, 2 * text) + linear(text, text) + linear(text, d) + linear(text, context)
    n += 3 * heads * (head_dim // 2)

    def block(last: bool) -> int:
        b = linear(d, 4 * d) + (linear(d, context) if last else linear(d, 4 * context))
        b += 3 * linear(d, d, False) + 3 * linear(context, d, False) + 4 * rms(head_dim) + linear(d, d)
        inner, inner_c = 8 * d // 3, 8 * context // 3
        b += linear(d, 2 * inner, False) + linear(inner, d, False)
        if not last:
            b += linear(d, context) + linear(context, 2 * inner_c, False) + linear(inner_c, context, False)
        return b

    return n + (layers - 1) * block(False) + block(True) + linear(d, 2 * d) + linear(d, patch * patch * in_ch)


def hunyuan_video(heads, head_dim, layers, single, refiner, text=4096, pooled=768, in_ch=16, patch=2, freq=256):
    """HunyuanVideo's DiT (every linear with a bias): the 3D patch conv (1 x patch x patch); the token refiner (its own
    timestep and pooled-caption MLPs, the caption's input linear, blocks of an affine LayerNorm, q, k, v, out, an
    affine LayerNorm, a SiLU feed-forward D -> 4D -> D and a 2D gate linear); the condition embedding (timestep,
    CLIP pooled and guidance MLPs); dual-stream blocks (per stream a 6D adaLN-zero linear, q, k, v, out and a GELU
    feed-forward, per-head RMS norms of both streams' q and k); single-stream blocks (a 3D adaLN linear, q, k, v, RMS
    norms of q and k, the MLP's input linear D -> 4D and the joint output linear 5D -> D); the final adaLN (D -> 2D)
    and output linear."""
    d = heads * head_dim
    n = in_ch * patch * patch * d + d
    n += linear(freq, d) + linear(d, d) + linear(text, d) + linear(d, d) + linear(text, d)
    n += refiner * (2 * norm(d) + 4 * linear(d, d) + linear(d, 4 * d) + linear(4 * d, d) + linear(d, 2 * d))
    n += 2 * (linear(freq, d) + linear(d, d)) + linear(pooled, d) + linear(d, d)
    dual = 2 * (linear(d, 6 * d) + 4 * linear(d, d) + linear(d, 4 * d) + linear(4 * d, d)) + 4 * rms(head_dim)
    single_block = linear(d, 3 * d) + 3 * linear(d, d) + 2 * rms(head_dim) + linear(d, 4 * d) + linear(5 * d, d)
    return n + layers * dual + single * single_block + linear(d, 2 * d) + linear(d, patch * patch * in_ch)
