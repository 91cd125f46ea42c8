"""Tests of learnrun.distributed.launch: task environments, output prefixes, restarts, arguments."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from learnrun.distributed import add_launch_arguments, launch, launch_main
from learnrun.distributed.launch import LocalCluster
from tests.helpers.distributed import Collector

pytestmark = pytest.mark.timeout(30)


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
