"""Built-in explainers: a prompting strategy and the backend it asks, under one name."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_explainers(register):
    paper = "lmmsae.explainers.paper:PaperExplainer"
    # The embedded default: the toy LLaVA describes each masked top image; the common words are the explanation.
    register("toy-llava", "lmmsae.explainers.common_words:CommonWordsExplainer", backend="toy-llava",
             per_image_prompt="<image>")
    # The paper's explainer; greedy local models answer a re-ask the same way, so none is made.
    register("llava-ov", paper, backend="llava-ov", malformed_retries=0)
    register("transformers", paper, backend="transformers", malformed_retries=0)
    register("anthropic", paper, backend="anthropic")
    register("openai-compatible", paper, backend="openai-compatible")
