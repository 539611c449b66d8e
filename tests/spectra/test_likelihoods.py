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


@pytest.mark.parametrize("build", ["FisherOperator", "DualFisherOperator", "fisher_gram",
                                   "structured_factors", "get_likelihood"])
@pytest.mark.parametrize("bad", ["poisson", "Categorical", None])
def test_every_entry_point_names_a_bad_likelihood(build, bad):
    # the operators and the Gram are validated like the public functions (no bare KeyError)
    from torch import nn

    from ortho_lightning.exceptions import ConfigurationError
    from ortho_lightning.spectra import gram, likelihoods, operators

    fn = {"FisherOperator": operators.FisherOperator,
          "DualFisherOperator": operators.DualFisherOperator, "fisher_gram": gram.fisher_gram,
          "structured_factors": gram.structured_factors}.get(build)
    model, x = nn.Linear(3, 2), torch.randn(4, 3)
    # the package's one format, owner = what the user called
    msg = rf"^{build}: likelihood must be one of \['categorical', 'gaussian'\], got {bad!r}$"
    with pytest.raises(ConfigurationError, match=msg):
        likelihoods.get_likelihood(bad) if fn is None else fn(model, x, bad)
    assert issubclass(ConfigurationError, ValueError)
    assert likelihoods.get_likelihood("gaussian") is LIKELIHOODS["gaussian"]
