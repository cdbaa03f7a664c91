"""Built-in explainers."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_explainers(register):
    local = "lmmsae.explainers.local:LocalExplainer"
    # The embedded default: the toy LLaVA describes each masked top image; the common words are the explanation.
    register("toy-llava", local, checkpoint="toy", aggregate="common-words", per_image_prompt="<image>",
             chat_template=False, system_prompt="", max_new_tokens=40, batch_size=32, answer_format="plain")
    # The paper's explainer (use -o explainer.checkpoint=llava-hf/llava-onevision-qwen2-7b-ov-hf on one GPU).
    register("llava-ov", local, checkpoint="llava-hf/llava-onevision-qwen2-72b-ov-hf", aggregate="multi-image")
    # Any image-text-to-text checkpoint: -o explainer.checkpoint=<HF id or folder>.
    register("transformers", local)
    register("anthropic", "lmmsae.explainers.anthropic:AnthropicExplainer")
    register("openai-compatible", "lmmsae.explainers.openai_compatible:OpenAICompatibleExplainer")
