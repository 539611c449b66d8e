import pytest
import torch

from ortho_lightning.spectra.likelihoods import LIKELIHOODS


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_factor_and_product_agree_with_the_closed_form_hessian(name):
    torch.manual_seed(0)
    f = torch.randn(4, 5) * 3
    if name == "categorical":
        p = torch.softmax(f, -1)
        h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        h = torch.eye(5).expand(4, 5, 5)
    s = LIKELIHOODS[name].sqrt(f)
    torch.testing.assert_close(s @ s.transpose(1, 2), h)
    u = torch.randn(4, 5)
    torch.testing.assert_close(LIKELIHOODS[name].hvp(f, u), (h @ u[:, :, None])[..., 0])
