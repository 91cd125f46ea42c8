"""Version policies, model config files and version switching (fake loader, real dirs)."""

from __future__ import annotations

import pytest

from learnrun.serving.tensors import NotFoundError
from learnrun.serving.versions import (
    AVAILABLE,
    END,
    ConfigError,
    ModelConfig,
    ServedModel,
    VersionPolicy,
    list_versions,
    parse_model_config,
)


@pytest.mark.parametrize("text,available,expected", [
    ("latest", [3, 1, 2], [3]),
    ("latest:2", [3, 1, 2], [2, 3]),
    ("all", [3, 1, 2], [1, 2, 3]),
    ("specific:1,3", [3, 1, 2], [1, 3]),
    ("specific:7", [3, 1, 2], []),
])
def test_policy_select(text, available, expected):
    policy = VersionPolicy.parse(text)
    assert policy.select(available) == expected
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize("text", ["newest", "latest:0", "latest:x", "specific:", "all:2", "specific:a"])
def test_policy_rejects_bad_text(text):
    with pytest.raises(ConfigError, match="latest"):
        VersionPolicy.parse(text)


def test_text_config_with_policy_and_labels():
    configs = parse_model_config("""
        # two models
        model_config_list {
          config { name: 'digits' base_path: "/m/digits" model_platform: 'learnrun'
                   model_version_policy { specific { versions: 1 versions: 2 } }
                   version_labels { key: 'stable' value: 1 } }
          config { name: 'other' base_path: '/m/other'
                   model_version_policy { latest { num_versions: 2 } } }
        }""")
    assert configs[0] == ModelConfig("digits", "/m/digits", VersionPolicy("specific", versions=(1, 2)),
                                     {"stable": 1})
    assert configs[1].policy == VersionPolicy("latest", 2)


def test_json_config():
    configs = parse_model_config('{"model_config_list": [{"name": "a", "base_path": "s3://b/a", '
                                 '"model_version_policy": "all", "version_labels": {"x": 5}}]}')
    assert configs == [ModelConfig("a", "s3://b/a", VersionPolicy("all"), {"x": 5})]


@pytest.mark.parametrize("text,match", [
    ("model_config_list { config { name: 'a' }", "missing"),
    ("model_config_list { config { name: 'a' base_path: '/p' model_platform: 'onnx' } }", "onnx"),
    ("model_config_list { config { name: 'a' base_path: '/p' } config { name: 'a' base_path: '/q' } }",
     "each once"),
    ('{"model_config_list": 3}', "model_config_list"),
    ("{not json", "JSON"),
])
def test_bad_configs(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_model_config(text)


def _version(base, version, content="ok"):
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "weights").write_text(content)
    (path / "signature.json").write_text("{}")  # the commit marker, written last
    return path


class FakePredictor:
    def __init__(self, path):
        self.path = path


def _loader(path):
    with open(f"{path}/weights") as f:
        if f.read() == "broken":
            raise ValueError("cannot read weights")
    return FakePredictor(path)


def test_list_versions_takes_integer_dirs_only(tmp_path):
    _version(tmp_path, 10)
    _version(tmp_path, 2)
    (tmp_path / "temp-11").mkdir()
    (tmp_path / "12").write_text("a file")
    (tmp_path / "13").mkdir()  # no signature.json: incomplete (being written, or its writer died)
    (tmp_path / "13" / "weights").write_text("ok")
    assert sorted(list_versions(str(tmp_path))) == [2, 10]
    assert list_versions(str(tmp_path / "missing")) == {}


def test_new_version_switches_and_old_unloads(tmp_path):
    closed = []

    class Runner:
        def __init__(self, predictor):
            self.predictor = predictor

        def close(self):
            closed.append(self.predictor.path)

    model = ServedModel(ModelConfig("m", str(tmp_path)), _loader, Runner)
    _version(tmp_path, 1)
    model.poll()
    assert model.get().version == 1 and model.ready()
    _version(tmp_path, 2)
    model.poll()
    assert model.get().version == 2
    assert [(s.version, s.state) for s in model.statuses()] == [(2, AVAILABLE), (1, END)]
    assert closed and closed[0].endswith("/1")
    with pytest.raises(NotFoundError, match="Specific"):
        model.get(1)


def test_failed_version_is_reported_previous_keeps_serving_and_retry_after_change(tmp_path):
    model = ServedModel(ModelConfig("m", str(tmp_path)), _loader)
    _version(tmp_path, 1)
    model.poll()
    _version(tmp_path, 2, "broken")
    model.poll()
    assert model.get().version == 1
    status = {s.version: s for s in model.statuses()}
    assert status[2].state == END and "cannot read weights" in status[2].error
    loads = []
    model._loader = lambda p: loads.append(p) or _loader(p)  # noqa: SLF001 - count attempts
    model.poll()
    assert loads == []  # unchanged files: not tried again
    (tmp_path / "2" / "weights").write_text("fixed now")
    model.poll()
    assert model.get().version == 2 and model.statuses(2)[0].error is None


def test_removed_version_unloads_and_labels_resolve(tmp_path):
    import shutil

    config = ModelConfig("m", str(tmp_path), VersionPolicy("all"), {"stable": 1})
    model = ServedModel(config, _loader)
    _version(tmp_path, 1)
    _version(tmp_path, 2)
    model.poll()
    assert model.get(label="stable").version == 1 and model.get().version == 2
    shutil.rmtree(tmp_path / "1")
    model.poll()
    assert model.statuses(1)[0].state == END
    with pytest.raises(NotFoundError):
        model.get(label="stable")
    with pytest.raises(NotFoundError, match="label"):
        model.get(label="canary")
