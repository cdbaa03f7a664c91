"""The trainer refuses what would give a NaN SAE, and never saves one."""

import pytest
import torch

from lmmsae.errors import UserError
from lmmsae.saes.io import save_sae
from lmmsae.saes.topk import TopKSAE
from lmmsae.trainer import Entry, Trainer, TrainerOptions


def _trainer(lr=0.0):
    return Trainer([Entry("main", "h", TopKSAE(8, TopKSAE.Options(n_latents=32, k=4)))], TrainerOptions(lr=lr))


def test_nan_or_inf_training_data_is_refused_before_any_update():
    trainer = _trainer()
    x = torch.randn(16, 8)
    x[3, 2] = float("nan")
    before = trainer.entries[0].sae.W_dec.detach().clone()
    with pytest.raises(UserError, match=r"training data for 'h' holds NaN or Inf \(step 1, 1 of its 16 rows\)"):
        trainer.step({"h": x})
    assert torch.equal(trainer.entries[0].sae.W_dec, before) and trainer.step_count == 0


def test_a_diverging_sae_stops_training_in_one_line():
    trainer = _trainer()
    trainer.step({"h": torch.randn(16, 8)})
    with torch.no_grad():
        trainer.entries[0].sae.W_dec.fill_(float("inf"))
    with pytest.raises(UserError, match=r"SAE 'main' diverged at step 2 .*lower train.lr"):
        trainer.step({"h": torch.randn(16, 8)})


def test_a_nan_sae_is_never_saved(tmp_path):
    sae = TopKSAE(8, TopKSAE.Options(n_latents=32, k=4))
    with torch.no_grad():
        sae.b_dec[0] = float("nan")
    with pytest.raises(UserError, match="holds NaN or Inf in b_dec"):
        save_sae(sae, tmp_path / "sae")
    assert not (tmp_path / "sae" / "sae.safetensors").exists()
