"""MADE (``nn/made.py``): the autoregressive property, context, prefix passes, arguments."""

from __future__ import annotations

import pytest
import torch

from pyroflows.nn import MADE

F64 = torch.float64


def _perturb(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("ordering", ["natural", "reverse", "random", [2, 0, 3, 1, 4]])
@pytest.mark.parametrize("hidden_dims", [[7], [16, 9]], ids=["one", "two"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_made_outputs_depend_only_on_earlier_inputs(ordering, hidden_dims, context_dim, device):
    dim, params = 5, 3
    made = MADE(dim, hidden_dims, params, context_dim, ordering=ordering, seed=4).double()
    made = made.to(device)
    _perturb(made)
    x = torch.randn(dim, dtype=F64, device=device)
    context = torch.randn(context_dim, dtype=F64, device=device) if context_dim else None
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


@pytest.mark.parametrize("ordering", ["natural", "reverse", "random"])
@pytest.mark.parametrize("hidden_dims", [[7], [16, 9]], ids=["one", "two"])
@pytest.mark.parametrize("context_dim", [0, 2])
def test_made_sequential_passes_equal_full_pass(ordering, hidden_dims, context_dim, device):
    """Pass k through the sorted prefixes gives exactly the full MADE's parameters of order[k]."""
    dim, params = 5, 3
    made = MADE(dim, hidden_dims, params, context_dim, ordering=ordering, seed=4).double()
    made = made.to(device)
    _perturb(made)
    x = torch.randn(6, dim, dtype=F64, device=device)
    context = torch.randn(6, context_dim, dtype=F64, device=device) if context_dim else None
    full = made(x, context)
    passes = made.sequential(context)
    order = made.order
    assert torch.equal(made.degrees[order], torch.arange(1, dim + 1, device=device))
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


def test_made_random_orders_differ_by_default_and_reproduce_with_a_seed():
    """Issue 12: repeated random orderings were all the same (a fixed ``seed=0`` default)."""
    torch.manual_seed(0)
    orders = [MADE(6, [12], ordering="random").degrees for _ in range(3)]
    assert len({tuple(o.tolist()) for o in orders}) == 3
    torch.manual_seed(0)  # the global seed reproduces them
    again = [MADE(6, [12], ordering="random").degrees for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(orders, again, strict=True))
    # an explicit seed gives a fixed order, whatever the global RNG
    fixed = [MADE(6, [12], ordering="random", seed=3).degrees for _ in range(2)]
    assert torch.equal(fixed[0], fixed[1])
    assert torch.equal(fixed[0], MADE(6, [12], ordering="random", seed=3).degrees)


def test_made_state_dict_of_another_random_order_loads_whole():
    """The order is saved (``degrees``, masks); loading also updates the derived orders."""
    torch.manual_seed(1)
    saved = MADE(5, [10], ordering="random").double()
    _perturb(saved)
    fresh = MADE(5, [10], ordering="random").double()
    assert not torch.equal(saved.degrees, fresh.degrees)
    fresh.load_state_dict(saved.state_dict())
    for name in ("degrees", "order", "inverse_order"):
        assert torch.equal(getattr(fresh, name), getattr(saved, name)), name
    x = torch.randn(4, 5, dtype=F64)
    torch.testing.assert_close(fresh(x), saved(x))
    passes = fresh.sequential()
    order = fresh.order
    for k in range(5):
        torch.testing.assert_close(passes(x[:, order[:k]], k), saved(x)[:, :, order[k]])


def test_activation_by_name_or_class_and_a_clear_error_otherwise():
    assert isinstance(MADE(3, [8], activation="tanh").layers[1], torch.nn.Tanh)
    assert isinstance(MADE(3, [8], activation=torch.nn.ELU).layers[1], torch.nn.ELU)
    with pytest.raises(ValueError, match=r"activation must be one of 'relu', 'tanh', 'elu'"):
        MADE(3, [8], activation="gelu")
