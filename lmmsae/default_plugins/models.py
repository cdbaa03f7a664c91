"""Built-in models."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_models(register):
    register("llava", "lmmsae.models.llava:LlavaAdapter")
    register("llava-next", "lmmsae.models.llava_next:LlavaNextAdapter")
    register("llava-ov", "lmmsae.models.llava_ov:LlavaOnevisionAdapter")
    register("toy-llava", "lmmsae.models.llava:ToyLlavaAdapter", checkpoint="toy")
