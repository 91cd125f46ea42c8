"""Tests for learnrun.canned.optimizers."""

from __future__ import annotations

import copy

import pytest
import torch

from learnrun.canned.optimizers import MultiOptimizer, make_optimizer, make_part_optimizers


def _params():
    return [torch.nn.Parameter(torch.ones(2))]


def test_names_classes_and_factories():
    assert isinstance(make_optimizer("Adam", _params(), None, 0.1), torch.optim.Adam)
    opt = make_optimizer("ftrl", _params(), 0.3, 0.1)
    assert isinstance(opt, torch.optim.Adagrad) and opt.param_groups[0]["lr"] == 0.3
    assert make_optimizer(torch.optim.SGD, _params(), None, 0.2).param_groups[0]["lr"] == 0.2
    opt = make_optimizer(lambda p: torch.optim.RMSprop(p, lr=0.01), _params(), None, 0.1)
    assert isinstance(opt, torch.optim.RMSprop)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("Nadamx", ValueError, "Unsupported optimizer name: Nadamx"),
        (torch.optim.SGD(_params(), lr=1), TypeError, "not an optimizer instance"),
        (lambda p: None, TypeError, "must return a torch.optim.Optimizer, got NoneType"),
        (3, TypeError, "optimizer must be a name"),
    ],
)
def test_optimizer_errors(spec, error, match):
    with pytest.raises(error, match=match):
        make_optimizer(spec, _params(), None, 0.1)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        make_optimizer("SGD", _params(), -1.0, 0.1)


def test_multi_optimizer_steps_all_and_round_trips_state():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    multi = MultiOptimizer([torch.optim.SGD([a], lr=0.5), torch.optim.Adam([b], lr=0.1)])
    assert len(multi.param_groups) == 2
    scheduler = torch.optim.lr_scheduler.StepLR(multi, step_size=1, gamma=0.5)
    (a * 2 + b * 3).sum().backward()
    multi.step()
    multi.zero_grad()
    assert a.item() == pytest.approx(0.0) and b.item() == pytest.approx(0.9)
    assert a.grad is None
    state = multi.state_dict()
    other = MultiOptimizer([torch.optim.SGD([a], lr=0.5), torch.optim.Adam([b], lr=0.1)])
    other.load_state_dict(state)
    assert other.optimizers[1].state_dict()["state"][0]["step"] == 1
    with pytest.raises(ValueError, match="holds 2 optimizer states but this model has 1"):
        MultiOptimizer([torch.optim.SGD([a], lr=0.5)]).load_state_dict(state)
    # LR schedulers reach every child through param_groups
    scheduler.step()
    assert multi.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)


def test_names_and_classes_get_fused_kernels_where_torch_has_them_for_the_device():
    def fused(opt):
        return opt.param_groups[0].get("fused")

    assert fused(make_optimizer("Adam", _params(), None, 0.1)) is True
    assert fused(make_optimizer(torch.optim.AdamW, _params(), None, 0.1, "cpu")) is True
    assert fused(make_optimizer("Ftrl", _params(), None, 0.1, "cpu")) is True  # Adagrad on CPU
    assert not fused(make_optimizer("Adagrad", _params(), None, 0.1, "cuda"))  # CPU-only kernel
    assert not fused(make_optimizer("SGD", _params(), None, 0.1))
    assert not fused(make_optimizer(lambda p: torch.optim.Adam(p, lr=0.1), _params(), None, 0.1))
    ints = [torch.nn.Parameter(torch.ones(2, dtype=torch.int64), requires_grad=False)]
    assert not fused(make_optimizer("Adam", ints, None, 0.1))


def test_fused_adam_takes_the_same_steps_as_the_default_one():
    a, b = _params(), _params()
    fast = make_optimizer("Adam", a, None, 0.1)
    plain = torch.optim.Adam(b, lr=0.1)
    for step in range(5):
        for p, opt in ((a[0], fast), (b[0], plain)):
            p.grad = torch.full_like(p, float(step) - 2.0)
            opt.step()
    torch.testing.assert_close(a[0], b[0])


def test_part_optimizers_share_one_when_the_class_is_the_same_and_load_a_per_part_state():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)

    def loss():
        x = torch.randn(4, 3)
        return b(torch.relu(a(x))).pow(2).mean()

    parts = [("Adam", a.parameters(), 0.01, 0.1), ("adam", b.parameters(), None, 0.2)]
    shared = make_part_optimizers(parts)
    assert type(shared) is torch.optim.Adam
    assert [g["lr"] for g in shared.param_groups] == [0.01, 0.2]
    # the earlier layout: one optimizer per part, stepped together
    per_part = MultiOptimizer([torch.optim.Adam(a.parameters(), lr=0.01),
                               torch.optim.Adam(b.parameters(), lr=0.2)])
    for _ in range(3):
        per_part.zero_grad()
        loss().backward()
        per_part.step()
    start = [copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())]
    shared.load_state_dict(copy.deepcopy(per_part.state_dict()))  # a checkpoint of the earlier layout
    torch.manual_seed(1)
    per_part.zero_grad()
    loss().backward()
    per_part.step()
    want = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    a.load_state_dict(start[0])  # back to the start, then one step of the shared optimizer
    b.load_state_dict(start[1])
    torch.manual_seed(1)
    shared.zero_grad()
    loss().backward()
    shared.step()
    got = [p.detach() for p in (*a.parameters(), *b.parameters())]
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-6)
    # a factory or different classes: one optimizer per part
    mixed = make_part_optimizers([("Adam", a.parameters(), None, 0.1), ("SGD", b.parameters(), None, 0.2)])
    assert isinstance(mixed, MultiOptimizer)
    single = make_part_optimizers([(lambda params: torch.optim.SGD(params, lr=0.3), a.parameters(), None, 0.1)])
    assert type(single) is torch.optim.SGD


def test_part_optimizers_group_parts_by_learning_rate_and_load_any_grouping():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)

    def train(opt, steps=2):
        for _ in range(steps):
            opt.zero_grad()
            b(torch.relu(a(torch.randn(4, 3)))).pow(2).mean().backward()
            opt.step()

    one = make_part_optimizers([("Adagrad", a.parameters(), 0.1, 1.0), ("Ftrl", b.parameters(), 0.1, 1.0)])
    assert type(one) is torch.optim.Adagrad and len(one.param_groups) == 1
    assert len(one.param_groups[0]["params"]) == 4
    two = make_part_optimizers([("Adagrad", a.parameters(), 0.1, 1.0), ("Adagrad", b.parameters(), 0.2, 1.0)])
    assert [g["lr"] for g in two.param_groups] == [0.1, 0.2]
    train(two)
    saved = copy.deepcopy(two.state_dict())
    one.load_state_dict(copy.deepcopy(saved))  # 2 groups -> 1: each parameter keeps its state
    assert one.param_groups[0]["lr"] == 0.1  # the saved options of the group's first parameter
    for p in (*a.parameters(), *b.parameters()):
        assert torch.equal(one.state[p]["sum"], two.state[p]["sum"])
    train(one)
    two.load_state_dict(copy.deepcopy(one.state_dict()))  # and 1 -> 2
    for p in (*a.parameters(), *b.parameters()):
        assert torch.equal(one.state[p]["sum"], two.state[p]["sum"])
    with pytest.raises(ValueError):  # other parameters: torch's own error, unchanged
        make_part_optimizers([("Adagrad", a.parameters(), 0.1, 1.0)]).load_state_dict(saved)
