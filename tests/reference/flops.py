"""Independent multiply-add counts of an SD-style UNet forward, from layer shapes alone.

Walks the published block layout level by level (resolution halves per level), adding the MACs of every
convolution and dense layer and the score / P·V products of every attention. No diffprobe or diffusers code.
"""

from collections import Counter


def unet_costs(channels, attn_levels, heads, ctx, latent_hw, batch, text_len=77, layers=2, depth=None,
               linear_proj=False):
    """Counter of MACs per layer type, plus attention element counts (``scores_self``/``scores_cross``: B*H*N*M)."""
    depth = depth or [1] * len(channels)
    heads = heads if isinstance(heads, list) else [heads] * len(channels)
    c0 = channels[0]
    temb = 4 * c0
    h, w = latent_hw
    n = len(channels)
    res = [((h + 2**i - 1) // 2**i, (w + 2**i - 1) // 2**i) for i in range(n)]
    k = Counter()

    def conv(cin, cout, kernel, hw):
        k["conv"] += batch * hw[0] * hw[1] * cout * cin * kernel * kernel

    def resnet(cin, cout, hw):
        conv(cin, cout, 3, hw)
        conv(cout, cout, 3, hw)
        if cin != cout:
            conv(cin, cout, 1, hw)
        k["linear"] += batch * temb * cout  # time_emb_proj

    def transformer(c, hw, level_depth, level_heads):
        t = hw[0] * hw[1]
        if linear_proj:
            k["linear"] += 2 * batch * t * c * c
        else:
            conv(c, c, 1, hw)
            conv(c, c, 1, hw)
        for _ in range(level_depth):
            k["attn_qkv"] += 3 * batch * t * c * c + batch * t * c * c + 2 * batch * text_len * ctx * c
            k["attn_out"] += 2 * batch * t * c * c
            k["attn_score"] += batch * t * t * c + batch * t * text_len * c
            k["attn_pv"] += batch * t * t * c + batch * t * text_len * c
            k["scores_self"] += batch * level_heads * t * t
            k["scores_cross"] += batch * level_heads * t * text_len
            k["ffn"] += batch * t * c * 8 * c + batch * t * 4 * c * c

    conv(4, c0, 3, res[0])
    k["embedding"] += batch * (c0 * temb + temb * temb)
    cin = c0
    for i, c in enumerate(channels):
        for _ in range(layers):
            resnet(cin, c, res[i])
            if attn_levels[i]:
                transformer(c, res[i], depth[i], heads[i])
            cin = c
        if i < n - 1:
            conv(c, c, 3, res[i + 1])  # stride-2 downsample
    c = channels[-1]
    resnet(c, c, res[-1])
    transformer(c, res[-1], depth[-1], heads[-1])
    resnet(c, c, res[-1])
    rev = channels[::-1]
    prev = rev[0]
    for i, c in enumerate(rev):
        level = n - 1 - i
        skip_in = rev[min(i + 1, n - 1)]
        for j in range(layers + 1):
            skip = skip_in if j == layers else c
            resnet((prev if j == 0 else c) + skip, c, res[level])
            if attn_levels[level]:
                transformer(c, res[level], depth[level], heads[level])
        if i < n - 1:
            conv(c, c, 3, res[level - 1])  # nearest x2, then 3x3 conv at the finer level
        prev = c
    conv(c0, 4, 3, res[0])
    return k
