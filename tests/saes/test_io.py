"""SAE checkpoints: bit-exact round trips, sparsify and SAELens imports checked against encode/decode
computed by hand in float64, and bad input reported as one clear UserError line."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmmsae import plugins
from lmmsae.errors import UserError
from lmmsae.saes.io import load_sae, save_sae

D, N, K = 6, 24, 3
ARCHITECTURES = plugins.registry("saes").names()


def random_sae(name: str, seed: int = 0):
    comp = plugins.get("saes", name)
    options = {"n_latents": N, **({"k": K} if name in ("topk", "matryoshka", "batchtopk") else {})}
    sae = comp.load()(D, comp.options(options))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(sae.parameters()) + list(sae.buffers()):
            values = torch.randn(tensor.shape, generator=g, dtype=torch.float64)
            tensor.copy_(values.abs() * 0.3 if tensor.ndim == 0 else values)  # batchtopk threshold > 0
    return sae.eval()


def one_line_error(exc_info, *fragments):
    message = str(exc_info.value)
    assert exc_info.type is UserError and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_every_architecture_is_covered():
    assert {"topk", "batchtopk", "relu", "gated", "jumprelu", "matryoshka"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_save_load_round_trip_is_bit_exact(name, tmp_path):
    sae = random_sae(name)
    save_sae(sae, tmp_path / "hp")
    back = load_sae(tmp_path / "hp")
    saved = sae.inference_sae()  # BatchTopK is saved (and loads) as the equivalent JumpReLU
    assert back.architecture == saved.architecture and back.cfg == saved.cfg
    assert back.dtype == sae.dtype and not back.training
    ours, theirs = saved.export_tensors(), back.export_tensors()
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    # the file holds exactly the exported tensors, and re-saving gives the same file contents
    on_disk = load_file(tmp_path / "hp" / "sae.safetensors")
    assert all(torch.equal(on_disk[k], ours[k]) for k in ours)
    save_sae(back, tmp_path / "again")
    again = load_file(tmp_path / "again" / "sae.safetensors")
    assert sorted(again) == sorted(on_disk) and all(torch.equal(again[k], on_disk[k]) for k in on_disk)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1))
    z = sae.encode(x)
    assert torch.equal(back.encode(x), z)
    assert torch.equal(back.decode(z), sae.decode(z))
    assert torch.equal(back(x), sae(x))


def test_jumprelu_arbitrary_thresholds_load_bit_exactly(tmp_path):
    """SAELens thresholds (any float32) load as they are: the threshold is the parameter, no exp/log."""
    save_sae(random_sae("jumprelu"), tmp_path)
    tensors = load_file(tmp_path / "sae.safetensors")
    tensors["threshold"] = torch.rand(N, generator=torch.Generator().manual_seed(0)) + 1e-3
    save_file(tensors, str(tmp_path / "sae.safetensors"))
    loaded = load_sae(tmp_path)
    assert torch.equal(loaded.threshold, tensors["threshold"])
    save_sae(loaded, tmp_path / "again")
    assert torch.equal(load_file(tmp_path / "again" / "sae.safetensors")["threshold"], tensors["threshold"])


# ---- sparsify -----------------------------------------------------------------------------------
def write_sparsify(folder, W_enc, b_enc, W_dec, b_dec, k):
    """As sparsify's Sae.save_to_disk writes it: cfg.json (SaeConfig + d_in) and sae.safetensors."""
    folder.mkdir(parents=True)
    n, d = W_enc.shape
    cfg = {"expansion_factor": n // d, "normalize_decoder": True, "num_latents": n, "k": k,
           "multi_topk": False, "skip_connection": False, "d_in": d}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({"encoder.weight": W_enc, "encoder.bias": b_enc, "W_dec": W_dec, "b_dec": b_dec},
              str(folder / "sae.safetensors"))


def test_sparsify_checkpoint_matches_hand_computed_topk(tmp_path):
    g = torch.Generator().manual_seed(2)
    W_enc, b_enc = torch.randn(N, D, generator=g), torch.randn(N, generator=g) * 0.1
    W_dec, b_dec = torch.randn(N, D, generator=g), torch.randn(D, generator=g)
    folder = tmp_path / "llama3-llava-next-8b-hf-sae-131k" / "model.layers.24"
    write_sparsify(folder, W_enc, b_enc, W_dec, b_dec, K)
    sae = load_sae(folder)
    assert sae.architecture == "topk" and sae.k == K and (sae.d_in, sae.n_latents) == (D, N)
    x = torch.randn(20, D, generator=g)
    # sparsify: pre = relu((x - b_dec) @ W_enc^T + b_enc), keep the top k, x_hat = z @ W_dec + b_dec
    pre = ((x.double() - b_dec.double()) @ W_enc.double().T + b_enc.double()).relu()
    values, indices = pre.topk(K, dim=-1)
    z_ref = torch.zeros_like(pre).scatter_(-1, indices, values)
    x_hat_ref = z_ref @ W_dec.double() + b_dec.double()
    z = sae.encode(x)
    assert torch.equal(z != 0, z_ref != 0)
    torch.testing.assert_close(z.double(), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(z).double(), x_hat_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).double(), x_hat_ref, rtol=1e-5, atol=1e-5)


def test_sparsify_extras_are_refused(tmp_path):
    g = torch.Generator().manual_seed(2)
    write_sparsify(tmp_path / "h", torch.randn(N, D, generator=g), torch.zeros(N), torch.randn(N, D, generator=g),
                   torch.zeros(D), K)
    cfg = json.loads((tmp_path / "h" / "cfg.json").read_text())
    (tmp_path / "h" / "cfg.json").write_text(json.dumps({**cfg, "transcode": True}))
    with pytest.raises(UserError) as exc:
        load_sae(tmp_path / "h")
    one_line_error(exc, "transcode", "not support")


# ---- SAELens ------------------------------------------------------------------------------------
def saelens_tensors(arch, g):
    t = {"W_enc": torch.randn(D, N, generator=g), "W_dec": torch.randn(N, D, generator=g),
         "b_dec": torch.randn(D, generator=g)}
    if arch == "gated":
        t.update(b_gate=torch.randn(N, generator=g) * 0.3, r_mag=torch.randn(N, generator=g) * 0.3,
                 b_mag=torch.randn(N, generator=g) * 0.3)
    else:
        t["b_enc"] = torch.randn(N, generator=g) * 0.3
    if arch == "jumprelu":
        t["threshold"] = torch.rand(N, generator=g) * 0.8
    return t


def saelens_reference(arch, t, x, apply_b_dec_to_input=True):
    """SAELens's encode/decode, in float64."""
    t = {k: v.double() for k, v in t.items()}
    sae_in = x.double() - (t["b_dec"] if apply_b_dec_to_input else 0)
    if arch == "gated":
        proj = sae_in @ t["W_enc"]
        z = ((proj + t["b_gate"]) > 0).double() * (proj * t["r_mag"].exp() + t["b_mag"]).relu()
    else:
        pre = sae_in @ t["W_enc"] + t["b_enc"]
        if arch == "standard":
            z = pre.relu()
        elif arch == "jumprelu":
            z = pre.relu() * (pre > t["threshold"])
        else:  # topk
            values, indices = pre.topk(K, dim=-1)
            z = torch.zeros_like(pre).scatter_(-1, indices, values.relu())
    return z, z @ t["W_dec"] + t["b_dec"]


@pytest.mark.parametrize("arch,apply_b_dec", [("standard", True), ("standard", False), ("jumprelu", True),
                                              ("topk", True), ("gated", True)])
def test_saelens_checkpoint_matches_hand_computed(arch, apply_b_dec, tmp_path):
    g = torch.Generator().manual_seed(3)
    t = saelens_tensors(arch, g)
    cfg = {"architecture": arch, "d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "hook_name": "blocks.3.hook_resid_post", "model_name": "gpt2"}
    if arch == "topk":
        cfg["activation_fn_kwargs"] = {"k": K}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    sae = load_sae(tmp_path)
    expected = {"standard": "relu"}.get(arch, arch)
    assert sae.architecture == expected and (sae.d_in, sae.n_latents) == (D, N)
    assert sae.cfg["hook_name"] == "blocks.3.hook_resid_post"
    x = torch.randn(20, D, generator=g)
    z_ref, x_hat_ref = saelens_reference(arch, t, x, apply_b_dec)
    z = sae.encode(x)
    assert torch.equal(z != 0, z_ref != 0)
    torch.testing.assert_close(z.double(), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).double(), x_hat_ref, rtol=1e-5, atol=1e-5)
    # and it saves to our layout and loads back unchanged
    save_sae(sae, tmp_path / "ours")
    assert torch.equal(load_sae(tmp_path / "ours")(x), sae(x))


def test_saelens_unknown_architecture_lists_supported(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "transcoder", "d_in": D, "d_sae": N}))
    save_file(saelens_tensors("standard", torch.Generator().manual_seed(0)), str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(UserError) as exc:
        load_sae(tmp_path)
    one_line_error(exc, "'transcoder'", "standard", "jumprelu", "topk")


# ---- bad input ----------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    return save_sae(random_sae("topk"), tmp_path / "hp")


def test_d_in_mismatch_in_trainer_is_one_line(saved):
    from lmmsae.trainer import Entry, Trainer

    trainer = Trainer([Entry("s", "layers.1", load_sae(saved).train())])
    with pytest.raises(UserError) as exc:
        trainer.step({"layers.1": torch.randn(8, D + 2)})
    one_line_error(exc, f"d_in={D}", f"width {D + 2}", "layers.1")


def test_check_d_in_is_one_line():
    from lmmsae.saes.base import check_d_in

    check_d_in(random_sae("relu"), "h", D)
    with pytest.raises(UserError) as exc:
        check_d_in(random_sae("relu"), "model.layers.24", 4096)
    one_line_error(exc, f"d_in={D}", "width 4096", "model.layers.24")


def test_corrupt_checkpoint(saved):
    (saved / "sae.safetensors").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "sae.safetensors", "corrupt")


def test_truncated_checkpoint(saved):
    data = (saved / "sae.safetensors").read_bytes()
    (saved / "sae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "sae.safetensors", "truncated")


def test_empty_checkpoint_file(saved):
    (saved / "sae.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "sae.safetensors")


def test_corrupt_cfg(saved):
    (saved / "cfg.json").write_text('{"architecture": "topk", ')
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "cfg.json", "not valid JSON")


def test_missing_files(saved, tmp_path):
    (saved / "sae.safetensors").unlink()
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "no sae.safetensors")
    (saved / "cfg.json").unlink()
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "no cfg.json")
    with pytest.raises(UserError) as exc:
        load_sae(tmp_path / "nowhere")
    one_line_error(exc, "does not exist")


def test_unknown_architecture_lists_known_ones(saved):
    cfg = json.loads((saved / "cfg.json").read_text())
    (saved / "cfg.json").write_text(json.dumps({**cfg, "architecture": "topkk"}))
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "'topkk'", "Did you mean 'topk'", *ARCHITECTURES)


def test_tensor_shape_that_disagrees_with_cfg(saved):
    cfg = json.loads((saved / "cfg.json").read_text())
    (saved / "cfg.json").write_text(json.dumps({**cfg, "d_in": D + 1}))
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "has shape", "from cfg.json")


def test_missing_tensor(saved):
    tensors = load_file(saved / "sae.safetensors")
    del tensors["b_dec"]
    save_file(tensors, str(saved / "sae.safetensors"))
    with pytest.raises(UserError) as exc:
        load_sae(saved)
    one_line_error(exc, "missing ['b_dec']")


def test_a_pickle_where_safetensors_is_expected_is_refused(tmp_path):
    """Never unpickled (a pickle can run code): a torch.save file named sae.safetensors, or a folder
    holding only sae.pt, is one line saying so."""
    save_sae(random_sae("topk"), tmp_path / "a")
    tensors = {k: v.clone() for k, v in load_file(tmp_path / "a" / "sae.safetensors").items()}  # not the mmap
    (tmp_path / "a" / "sae.safetensors").unlink()
    torch.save(tensors, tmp_path / "a" / "sae.safetensors")
    with pytest.raises(UserError) as err:
        load_sae(tmp_path / "a")
    one_line_error(err, "sae.safetensors is a pickle (torch.save), not safetensors")
    save_sae(random_sae("topk"), tmp_path / "b")
    (tmp_path / "b" / "sae.safetensors").unlink()
    torch.save(tensors, tmp_path / "b" / "sae.pt")
    with pytest.raises(UserError) as err:
        load_sae(tmp_path / "b")
    one_line_error(err, "holds sae.pt, a pickle checkpoint: lmmsae loads only safetensors")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2]"])
def test_a_malformed_cfg_json_is_one_line_naming_it(tmp_path, content):
    save_sae(random_sae("topk"), tmp_path)
    (tmp_path / "cfg.json").write_bytes(content)
    with pytest.raises(UserError) as err:
        load_sae(tmp_path)
    one_line_error(err, str(tmp_path / "cfg.json"))


def test_no_code_loads_a_pickle():
    """torch.load only with weights_only=True, and no pickle.load, anywhere in the package or plugins."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("lmmsae/**/*.py"), *root.glob("plugins/**/*.py")]:
        text = path.read_text()
        for call in re.finditer(r"torch\.load\(([^)]*)\)|pickle\.loads?\(", text):
            if "weights_only=True" not in (call.group(1) or ""):
                offenders.append(f"{path.relative_to(root)}: {call.group(0)}")
    assert offenders == []
