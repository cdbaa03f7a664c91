"""The streaming feature cache: per latent, where it fires (top images with per-patch maps, a uniform
sample of activating images, negatives, statistics), in memory bounded by latents x examples x map size.

`layout` places image tokens in a fixed flat map, `tracker` keeps the best entries per latent,
`stats` accumulates frequencies, `state` ties them together per batch, `select` picks examples for
explainers and scorers. The on-disk form lives in `lmmsae.stores.features`.
"""

POOLINGS = ("base_mean", "max", "mean")  # how an image's token activations rank it (lmmsae.cache.state)
