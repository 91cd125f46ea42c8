"""learnrun.distributed: strategy_for_config picks the engine of a RunConfig."""

from __future__ import annotations

import json

import pytest

from learnrun.config.run_config import RunConfig
from learnrun.distributed import strategy_for_config

pytestmark = pytest.mark.timeout(30)


def test_strategy_for_config_picks_the_engine_and_rejects_non_trainers():
    def config(task_type: str, **jobs: list[str]) -> RunConfig:
        cluster = {"chief": ["h:1"], "worker": ["h:2"], **jobs}
        tf_config = {"cluster": cluster, "task": {"type": task_type, "index": 0}}
        return RunConfig(environ={"TF_CONFIG": json.dumps(tf_config)})

    ddp = strategy_for_config(config("chief"))
    assert type(ddp).__name__ == "DDPStrategy" and ddp.input_context().num_input_pipelines == 2
    ps = strategy_for_config(config("chief", ps=["h:3"]))
    assert type(ps).__name__ == "ParameterServerStrategy"
    with pytest.raises(ValueError, match="'evaluator' does not train"):
        strategy_for_config(config("evaluator", evaluator=["h:4"]))
