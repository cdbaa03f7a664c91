"""Built-in backends."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    local = "lmmsae.backends.local:LocalBackend"
    # The shipped toy LLaVA: one image per prompt, no chat template, short answers.
    register("toy-llava", local, checkpoint="toy", chat_template=False, max_new_tokens=40, batch_size=32)
    # The paper's explainer model (use -o explainer.checkpoint=llava-hf/llava-onevision-qwen2-7b-ov-hf on one GPU).
    register("llava-ov", local, checkpoint="llava-hf/llava-onevision-qwen2-72b-ov-hf")
    # Any image-text-to-text checkpoint: -o explainer.checkpoint=<HF id or folder>.
    register("transformers", local)
    register("anthropic", "lmmsae.backends.anthropic:AnthropicBackend")
    register("openai-compatible", "lmmsae.backends.openai_compatible:OpenAICompatibleBackend")
