"""Fast in-process tests of the parameter-server logic and the launcher (no cluster)."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.config.run_config import RunConfig
from learnrun.distributed import add_launch_arguments, launch, launch_main, strategy_for_config
from learnrun.distributed.launch import LocalCluster
from learnrun.distributed.ps.server import (
    STOP_DONE,
    STOP_FAILED,
    STOP_NONE,
    ShardServer,
)
from learnrun.distributed.ps.trainer import plan_shards
from learnrun.errors import DistributedError
from tests.helpers.distributed import Collector

pytestmark = pytest.mark.timeout(30)


def test_plan_shards_balances_largest_first_and_is_deterministic():
    sizes = {"a": 100, "b": 60, "c": 50, "d": 5}
    assert plan_shards(sizes, 2) == {"a": 0, "b": 1, "c": 1, "d": 0}
    assert set(plan_shards(sizes, 1).values()) == {0}


def _server(clock, trainers=("chief:0", "worker:0")):
    server = ShardServer(0, list(trainers), timeout=10.0, clock=clock)
    w = torch.tensor([1.0, 2.0])
    server.init("chief:0", {"params": {"w": w}, "optimizer_class": torch.optim.SGD,
                            "groups": [{"lr": 0.5, "momentum": 0.0}], "group_of": {"w": 0},
                            "state": {}, "global_step": 7})
    return server


def test_shard_server_applies_pushes_like_the_optimizer_and_counts_steps():
    server = _server(FakeClock())
    step, stop = server.push("worker:0", {"w": torch.tensor([1.0, 1.0])}, [0.1])
    assert (step, stop) == (8, 0)
    version, params = server.pull("chief:0")
    assert version == 1
    torch.testing.assert_close(params["w"], torch.tensor([0.9, 1.9]))


def test_shard_server_refuses_calls_before_init():
    server = ShardServer(1, ["chief:0"], timeout=5.0, clock=FakeClock())
    with pytest.raises(DistributedError, match="chief:0 has not sent"):
        server.pull("worker:0")


def test_shard_server_ends_on_goodbyes_and_presumes_silent_workers_dead():
    clock = FakeClock()
    server = _server(clock, ("chief:0", "worker:0", "worker:1"))
    server.heartbeat("worker:0")
    server.goodbye("chief:0", True)
    server.goodbye("worker:0", True)
    assert server.stop == STOP_DONE
    assert server.check() is False  # worker:1 may still be alive
    clock.advance(server.grace + 1)
    assert server.check() is True
    assert server.presumed_dead == {"worker:1"}


def test_shard_server_fails_when_the_chief_is_silent_or_fails():
    clock = FakeClock()
    server = _server(clock)
    clock.advance(11)
    # First every caller is told that the chief failed (STOP_FAILED), then the ps raises.
    assert server.check() is False
    assert server.heartbeat("worker:0")[1] == STOP_FAILED
    assert server.push("worker:0", {"w": torch.ones(2)}, [0.1]) == (7, STOP_FAILED)
    clock.advance(server.grace)
    with pytest.raises(DistributedError, match="task chief:0 has been silent for 11.0 s"):
        server.check()
    server = _server(FakeClock())
    server.goodbye("chief:0", False)
    assert server.heartbeat("worker:0")[1] == STOP_FAILED
    server.clock.advance(server.grace)
    server.check()  # noticed now; raised after the grace period
    server.clock.advance(server.grace)
    with pytest.raises(DistributedError, match="chief:0 reported a failure"):
        server.check()


def test_shard_server_refuses_pushes_past_the_chiefs_last_step():
    server = _server(FakeClock())  # at global step 7
    assert server.set_last_step("chief:0", 9) == 7
    assert server.push("worker:0", {"w": torch.ones(2)}, [0.1]) == (8, STOP_NONE)
    assert server.push("chief:0", {"w": torch.ones(2)}, [0.1]) == (9, STOP_DONE)
    before = server.pull("worker:0")
    # a concurrent push that arrives after the target is neither applied nor counted
    assert server.push("worker:0", {"w": torch.ones(2)}, [0.1]) == (9, STOP_DONE)
    assert server.pull("worker:0")[0] == before[0] == 2 and server.refused == 1
    torch.testing.assert_close(server.pull("worker:0")[1]["w"], before[1]["w"])
    with pytest.raises(DistributedError, match="only chief:0 sets the last step.*worker:0"):
        server.set_last_step("worker:0", 100)


def test_shard_server_takes_the_last_step_with_the_initial_shard():
    server = ShardServer(0, ["chief:0"], timeout=5.0, clock=FakeClock())
    server.init("chief:0", {"params": {"w": torch.zeros(1)}, "optimizer_class": torch.optim.SGD,
                            "groups": [{"lr": 1.0}], "group_of": {"w": 0}, "state": {},
                            "global_step": 3, "last_step": 3})
    assert server.heartbeat("chief:0")[:2] == (3, STOP_DONE)  # restored at the target
    assert server.push("chief:0", {"w": torch.ones(1)}, [1.0]) == (3, STOP_DONE)


def test_shard_server_times_out_without_initial_parameters():
    clock = FakeClock()
    server = ShardServer(0, ["chief:0"], timeout=3.0, clock=clock)
    clock.advance(4)
    with pytest.raises(DistributedError, match="did not send the initial parameters within 3 s"):
        server.check()


def test_task_envs_give_each_task_its_tf_config():
    ports = iter(range(5000, 5100))
    cluster = LocalCluster(["x"], num_ps=2, num_workers=1, evaluator=True,
                           port_picker=lambda: next(ports))
    envs = cluster.task_envs()
    assert list(envs) == ["ps:0", "ps:1", "chief:0", "worker:0", "evaluator:0"]
    tf = json.loads(envs["worker:0"]["TF_CONFIG"])
    assert tf["task"] == {"type": "worker", "index": 0}
    assert tf["cluster"] == {"chief": ["127.0.0.1:5000"], "worker": ["127.0.0.1:5001"],
                             "ps": ["127.0.0.1:5002", "127.0.0.1:5003"]}
    torchrun = LocalCluster(["x"], num_workers=1, roles_from="torchrun",
                            port_picker=lambda: 6000).task_envs()
    assert torchrun["worker:0"] == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2",
                                    "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                    "MASTER_PORT": "6000"}


def test_launch_prefixes_output_and_returns_the_first_failure_code(tmp_path):
    out = Collector()
    # the worker fails only after the chief has printed (a marker file), so the launcher's
    # stop cannot cut the chief's line short however slowly the chief starts
    marker = str(tmp_path / "chief-printed")
    script = ("import json,os,sys,time; t=json.loads(os.environ['TF_CONFIG'])['task'];"
              "print('hello', t['type'], flush=True);"
              f"m={marker!r}; t['type']=='chief' and open(m,'w').close();"
              "end=time.monotonic()+20\n"
              "while t['type']=='worker' and not os.path.exists(m) and time.monotonic()<end: "
              "time.sleep(0.05)\n"
              "sys.exit(3 if t['type']=='worker' else 0)")
    code = launch(None, num_workers=1, command=[sys.executable, "-c", script], output=out,
                  timeout=25, grace_secs=2)
    assert code == 3
    assert "[chief:0] hello chief" in out.lines and "[worker:0] hello worker" in out.lines
    assert any(line.startswith("[launch] worker:0 failed with exit code 3") for line in out.lines)


def test_launch_restarts_the_group_up_to_max_restarts():
    out = Collector()
    code = launch(None, command=[sys.executable, "-c", "import sys; sys.exit(2)"], output=out,
                  max_restarts=1, timeout=25, grace_secs=2)
    assert code == 2
    assert any("attempt 2 of 2" in line for line in out.lines)


def test_launch_arguments_and_bad_values():
    parser = add_launch_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--ps", "1", "--workers", "2", "--evaluator", "pkg.mod",
                              "--model-dir", "/m"])
    assert (args.ps, args.workers, args.evaluator, args.target) == (1, 2, True, "pkg.mod")
    assert args.run_args == ["--model-dir", "/m"]
    with pytest.raises(ValueError, match="--workers must be >= 0; got -1"):
        launch_main(parser.parse_args(["--workers", "-1", "t"]))
    with pytest.raises(ValueError, match="roles_from"):
        LocalCluster(["x"], roles_from="slurm")
    with pytest.raises(ValueError, match="needs a TARGET"):
        launch(None)


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
