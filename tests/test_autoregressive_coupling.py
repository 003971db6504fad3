"""MADE's autoregressive property, the transformers, coupling masks and flow sequences."""

from __future__ import annotations

import pytest
import torch

from pyroflows.nn import MADE
from pyroflows.transforms import (
    Additive,
    Affine,
    Autoregressive,
    Coupling,
    FlowSequence,
    build,
    coupling_mask,
    maf,
    planar,
    radial,
)

F64 = torch.float64


def _perturb(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("ordering", ["natural", "reverse", "random", [2, 0, 3, 1, 4]])
@pytest.mark.parametrize("hidden_dims", [[7], [16, 9]], ids=["one", "two"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_made_outputs_depend_only_on_earlier_inputs(ordering, hidden_dims, context_dim):
    dim, params = 5, 3
    made = MADE(dim, hidden_dims, params, context_dim, ordering=ordering, seed=4).double()
    _perturb(made)
    x = torch.randn(dim, dtype=F64)
    context = torch.randn(context_dim, dtype=F64) if context_dim else None
    jac = torch.autograd.functional.jacobian(lambda v: made(v, context), x)  # (P, D, D)
    degrees = made.degrees
    allowed = degrees[None, :] < degrees[:, None]  # output i may see input j iff m(j) < m(i)
    for p in range(params):
        assert torch.all(jac[p][~allowed] == 0), "an output depends on a forbidden input"
    # ... and the mask is not trivially empty: some allowed dependence is present
    assert (jac.abs().sum(0)[allowed] > 0).any()


def test_made_context_reaches_every_output():
    """Also the first dimension's parameters, which no input may reach."""
    made = MADE(3, [12], 2, context_dim=4).double()
    _perturb(made)
    total = 0
    for _ in range(5):  # a single context may leave every degree-0 ReLU unit inactive
        total = (
            total
            + torch.autograd.functional.jacobian(
                lambda c: made(torch.zeros(3, dtype=F64), c), torch.randn(4, dtype=F64)
            ).abs()
        )
    assert (total.sum(-1) > 0).all()


def test_made_rejects_bad_arguments():
    with pytest.raises(ValueError, match="hidden layer"):
        MADE(3, [])
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, [8], ordering=[0, 0, 1])
    with pytest.raises(ValueError, match="context"):
        MADE(3, [8], context_dim=2)(torch.zeros(3))


@pytest.mark.parametrize("transformer", [Affine(), Affine(stable=True), Additive()], ids=repr)
def test_transformer_inverse_and_log_det(transformer):
    x = torch.randn(6, 4, dtype=F64)
    params = torch.randn(6, transformer.params_per_dim, 4, dtype=F64)
    y, log_det = transformer.forward(x, params)
    x_back, log_det_back = transformer.inverse(y, params)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, log_det)
    slope = torch.func.vmap(torch.func.jacfwd(lambda v, p: transformer.forward(v, p)[0]))(
        x, params
    ).diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(slope.abs().log(), log_det)


def test_identity_at_initialisation():
    x = torch.randn(5, 4)
    for flow in (Autoregressive(4), Coupling(4), Coupling(4, transformer=Additive())):
        torch.testing.assert_close(flow(x), x)
        assert torch.all(flow.log_abs_det_jacobian(x, flow(x)) == 0)


def test_coupling_masks_and_validation():
    assert coupling_mask(4).tolist() == [True, True, False, False]
    assert coupling_mask(4, flip=True).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="no coordinate"):
        Coupling(3, mask=torch.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="kind"):
        coupling_mask(3, "checker")
    with pytest.raises(ValueError, match="needs input_dim >= 2"):
        Coupling(1)


def test_autoregressive_inverse_is_the_sequential_one_for_maf():
    """maf's density direction is one parallel pass per layer: no layer runs its inverse."""
    flow = maf(4, num_layers=2, hidden_dims=[16])
    calls = []
    for layer in flow.layers:
        original = layer.flow._inverse_pass
        layer.flow._inverse_pass = lambda *a, original=original: calls.append(1) or original(*a)
    flow.inv(torch.randn(8, 4))
    assert not calls


def test_flow_sequence_checks_and_mixing_conditional_layers():
    with pytest.raises(ValueError, match="input_dim"):
        FlowSequence([planar(2), radial(3)])
    with pytest.raises(ValueError, match="context_dim"):
        FlowSequence([planar(2, context_dim=1), radial(2, context_dim=3)])
    mixed = FlowSequence([planar(2, context_dim=3), build("lu_linear", 2), radial(2)])
    assert mixed.context_dim == 3
    y = mixed.condition(torch.zeros(5, 3))(torch.randn(5, 2))
    assert y.shape == (5, 2)


@pytest.mark.parametrize("ordering", ["natural", "reverse", "random"])
@pytest.mark.parametrize("hidden_dims", [[7], [16, 9]], ids=["one", "two"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_made_sequential_passes_equal_full_pass(ordering, hidden_dims, context_dim):
    """Pass k through the sorted prefixes gives exactly the full MADE's parameters of order[k]."""
    dim, params = 5, 3
    made = MADE(dim, hidden_dims, params, context_dim, ordering=ordering, seed=4).double()
    _perturb(made)
    x = torch.randn(6, dim, dtype=F64)
    context = torch.randn(6, context_dim, dtype=F64) if context_dim else None
    full = made(x, context)
    passes = made.sequential(context)
    order = made.order
    assert torch.equal(made.degrees[order], torch.arange(1, dim + 1))
    for k in range(dim):
        step = passes(x[:, order[:k]], k)
        torch.testing.assert_close(step, full[:, :, order[k]], rtol=1e-13, atol=1e-13)


def test_made_hidden_degrees_are_sorted_prefixes():
    """A first-layer unit of degree m sees exactly m inputs: row sums give the degrees."""
    made = MADE(4, [10, 6], 2)
    degrees = made.layers[0].mask.sum(1)
    assert torch.all(degrees[1:] >= degrees[:-1]), "hidden units are not sorted by degree"
    expected = [int((degrees <= k).sum()) for k in range(4)]
    assert made._prefixes[0] == expected == [0, 4, 7, 10]
