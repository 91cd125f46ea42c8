"""RunConfig(compile=True): the training loop calls the module compiled in place."""

from __future__ import annotations

import pytest
import torch

from learnrun.config.run_config import RunConfig
from learnrun.distributed.base import LocalStrategy, compile_if_configured


def test_compile_if_configured_compiles_in_place_and_keeps_the_state_dict_names():
    module = torch.nn.Linear(2, 1)
    names = list(module.state_dict())
    assert compile_if_configured(module, RunConfig()) is module and module._compiled_call_impl is None
    assert compile_if_configured(module, RunConfig(compile=True)) is module
    assert module._compiled_call_impl is not None and list(module.state_dict()) == names


@pytest.mark.timeout(300)
def test_estimator_trains_a_compiled_module(tmp_path):
    import learnrun

    def model_fn():
        torch.manual_seed(0)
        module = torch.nn.Linear(3, 2)
        return learnrun.EstimatorSpec(module=module, loss_fn=torch.nn.functional.cross_entropy,
                                      optimizer=torch.optim.SGD(module.parameters(), lr=0.1))

    x = torch.randn(8, 3)
    y = torch.tensor([0, 1] * 4)
    config = RunConfig(model_dir=str(tmp_path), device="cpu", compile=True)
    assert LocalStrategy(config).prepare(torch.nn.Linear(1, 1), None)._compiled_call_impl is not None
    est = learnrun.Estimator(model_fn, config=config)
    est.train(lambda: [(x, y)] * 3)
    assert est.get_variable_value("weight").shape == (2, 3)
    assert est.evaluate(lambda: [(x, y)])["global_step"] == 3
