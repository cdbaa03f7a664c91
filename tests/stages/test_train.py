

def test_sparsity_warning_names_the_threshold():
    from lmmsae.stages.train import sparsity_warning

    dense = {"evaluation": {"l0": {"value": 1003.0}}}
    assert sparsity_warning(dense, {"n_latents": 2048}) == (
        "L0 = 1003.0 of 2048 latents per token (49% > 10%): not a sparse code; raise the sparsity penalty "
        "(-o sae.l1_coefficient / sae.l0_coefficient)")
    assert sparsity_warning({"evaluation": {"l0": {"value": 150.0}}}, {"n_latents": 2048}) is None
    assert sparsity_warning({"evaluation": {"l0": {"value": 32.0}}}, {"n_latents": 2048, "k": 32}) is None
    low = {"training": {"last_batch": {"l0": 9.5}}}  # no stored activations: the last training batch's L0
    assert sparsity_warning(low, {"n_latents": 2048, "k": 32}).startswith("L0 = 9.5 per token for k = 32 (outside k/2..2k)")
