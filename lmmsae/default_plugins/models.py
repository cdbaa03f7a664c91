"""Built-in models."""

from lmmsae.hookspecs import hookimpl

# A real model: device and dtype follow the machine (cuda + bfloat16 when there is a GPU), and the user
# names a dataset (None: the toy shapes fit only the toy model). The toy LLaVA keeps the config's
# defaults, which are the toy world's.
REAL = {"device": "auto", "dtype": "auto", "dataset": None}


@hookimpl
def register_models(register):
    # LLaVA-1.5-7B has 32 blocks: block 24 is the depth the paper chose for LLaVA-NeXT-8B (also 32).
    register("llava", "lmmsae.models.llava:LlavaAdapter", run_defaults={**REAL, "hookpoints": ["layers.24"]})
    # The paper's layer: the residual stream after block 24 of LLaVA-NeXT-8B.
    register("llava-next", "lmmsae.models.llava_next:LlavaNextAdapter",
             run_defaults={**REAL, "hookpoints": ["layers.24"]})
    # Qwen2-7B has 28 blocks: block 21 is the paper's relative depth (3/4 of the way up).
    register("llava-ov", "lmmsae.models.llava_ov:LlavaOnevisionAdapter",
             run_defaults={**REAL, "hookpoints": ["layers.21"]})
    register("toy-llava", "lmmsae.models.llava:LlavaAdapter", checkpoint="toy")
