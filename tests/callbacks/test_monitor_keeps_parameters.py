"""A Jacobian monitor measuring a model whose ``spectrum_output_fn`` is a submodule (here
``self.layers``) leaves that submodule's Parameters in place, so they keep training. (It once
left plain detached tensors there: the feature layers silently froze, and a regularizer on them
failed with "element 0 of tensors does not require grad".)"""

import torch
from lightning.pytorch import Trainer
from torch import nn

from ortho_lightning.callbacks import JacobianSpectrumMonitor
from tests.callbacks._monitor_helpers import TinyNetWithFeatures, loader


def test_measured_submodule_keeps_its_parameters_and_trains():
    model = TinyNetWithFeatures(lr=0.1)
    before = model.layers[0].weight.detach().clone()
    trainer = Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      callbacks=[JacobianSpectrumMonitor(probe_size=4, every_n_steps=1,
                                                         every_n_epochs=None)])
    trainer.fit(model, loader(n=32, batch_size=8))
    weight = model.layers[0].weight
    assert isinstance(weight, nn.Parameter) and weight.requires_grad
    in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(weight) in in_optimizer
    assert not torch.equal(weight.detach(), before)  # it trained
