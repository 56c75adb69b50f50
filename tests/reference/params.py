"""Independent parameter counts of the SD architectures, from layer shapes alone.

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


def vae(channels=(128, 256, 512, 512), layers=2, latent=4):
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
    return enc + dec + conv(2 * latent, 2 * latent, 1) + conv(latent, latent, 1)


def clip_text(hidden, inter, layers, vocab=49408, positions=77, projection=None):
    block = 2 * norm(hidden) + 4 * linear(hidden, hidden) + linear(hidden, inter) + linear(inter, hidden)
    n = vocab * hidden + positions * hidden + layers * block + norm(hidden)
    return n + (linear(hidden, projection, bias=False) if projection else 0)
