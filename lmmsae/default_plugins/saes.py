"""Built-in saes."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_saes(register):
    register("topk", "lmmsae.saes.topk:TopKSAE")
    register("batchtopk", "lmmsae.saes.batchtopk:BatchTopKSAE")
    register("relu", "lmmsae.saes.relu:ReLUSAE")
    register("gated", "lmmsae.saes.gated:GatedSAE")
    register("jumprelu", "lmmsae.saes.jumprelu:JumpReLUSAE")
    register("matryoshka", "lmmsae.saes.matryoshka:MatryoshkaSAE")
