"""Tests for perturbjax.config: variant parsing, config loading, overrides, JSON."""

import json
import textwrap

import ml_collections
import pytest
from ml_collections import config_dict

from perturbjax import config as cfg_lib

CONFIG_SOURCE = textwrap.dedent(
    """
    import dataclasses

    import ml_collections

    from perturbjax.config import parse_arg


    @dataclasses.dataclass
    class _Unused:  # dataclasses need the module registered in sys.modules
        x: int = 0


    def get_config(arg=None):
        arg = parse_arg(arg, fold=0, test=False, lr=1e-3)
        config = ml_collections.ConfigDict()
        config.fold = arg.fold
        config.test = arg.test
        config.name = "base"
        config.seed = 0
        config.baselines = ("mean",)
        config.extra = None
        config.model = ml_collections.ConfigDict()
        config.model.hidden_dim = 8 if arg.test else 256
        config.model.dropout = 0.1
        config.model.use_attention = True
        config.optim = ml_collections.ConfigDict()
        config.optim.lr = arg.lr
        config.optim.schedule = ml_collections.ConfigDict({"warmup_steps": 10})
        config.tags = ["a"]
        return config


    def get_sweep():
        return [[f"fold={f}", "test"] for f in range(3)]
    """
)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG_SOURCE)
    return str(path)


@pytest.fixture
def config(config_file):
    return cfg_lib.load_config(config_file)


# parse_arg


def test_parse_arg_defaults():
    for arg in (None, ""):
        out = cfg_lib.parse_arg(arg, fold=0, test=False)
        assert out.to_dict() == {"fold": 0, "test": False}


def test_parse_arg_variants():
    out = cfg_lib.parse_arg(
        "fold=2, test,lr=0.1,name=x,flag=false", fold=0, test=False, lr=1e-3, name="", flag=True
    )
    assert out.to_dict() == {"fold": 2, "test": True, "lr": 0.1, "name": "x", "flag": False}
    assert isinstance(out.fold, int) and isinstance(out.lr, float)
    assert cfg_lib.parse_arg("lr=1", lr=0.5).lr == 1.0
    assert cfg_lib.parse_arg("flag=1", flag=False).flag is True
    assert cfg_lib.parse_arg("flag=0", flag=True).flag is False


def test_parse_arg_unknown_key_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'folds'.*\['fold', 'test'\]"):
        cfg_lib.parse_arg("folds=2", fold=0, test=False)


def test_parse_arg_type_errors():
    with pytest.raises(ValueError, match=r"'two'.*'fold'.*int"):
        cfg_lib.parse_arg("fold=two", fold=0)
    with pytest.raises(ValueError, match=r"'yes'.*'test'.*bool"):
        cfg_lib.parse_arg("test=yes", test=False)
    with pytest.raises(ValueError, match="bare word"):
        cfg_lib.parse_arg("fold", fold=0)


# load_config / load_sweep


def test_load_config_without_arg(config):
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.fold == 0 and config.test is False and config.model.hidden_dim == 256


def test_load_config_with_arg(config_file):
    config = cfg_lib.load_config(f"{config_file}:fold=2,test,lr=0.01")
    assert config.fold == 2 and config.test is True
    assert config.model.hidden_dim == 8 and config.optim.lr == 0.01
    # An empty ARG means no variant.
    assert cfg_lib.load_config(f"{config_file}:").fold == 0


def test_load_config_separates_same_named_files(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "exp.py").write_text(
            "import ml_collections\n"
            "def get_config(arg=None):\n"
            f"    return ml_collections.ConfigDict({{'name': '{name}'}})\n"
        )
    assert cfg_lib.load_config(str(tmp_path / "a" / "exp.py")).name == "a"
    assert cfg_lib.load_config(str(tmp_path / "b" / "exp.py")).name == "b"


def test_load_config_errors(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(FileNotFoundError, match="nope.py"):
        cfg_lib.load_config(f"{missing}:test")
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ImportError, match=r"empty.py.*get_config"):
        cfg_lib.load_config(str(empty))
    with pytest.raises(ImportError, match="get_sweep"):
        cfg_lib.load_sweep(str(empty))
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def get_config(arg=None):\n    return {'a': 1}\n")
    with pytest.raises(TypeError, match="ConfigDict"):
        cfg_lib.load_config(str(wrong))


def test_load_sweep(config_file):
    sweep = cfg_lib.load_sweep(config_file)
    assert sweep == [["fold=0", "test"], ["fold=1", "test"], ["fold=2", "test"]]
    # Here each entry is a variant arg for the same file.
    assert cfg_lib.load_config(f"{config_file}:{','.join(sweep[1])}").fold == 1
    with pytest.raises(ValueError, match="ARG"):
        cfg_lib.load_sweep(f"{config_file}:test")


# apply_overrides


def test_nested_overrides_and_types(config):
    out = cfg_lib.apply_overrides(
        config,
        [
            "fold=3",
            "name=run 1",
            "model.hidden_dim=64",
            "model.dropout=0",
            "model.use_attention=False",
            "optim.lr=3e-4",
            "optim.schedule.warmup_steps=5",
            "test=true",
        ],
    )
    assert out.fold == 3 and out.name == "run 1" and out.test is True
    assert out.model.hidden_dim == 64
    assert out.model.dropout == 0.0 and isinstance(out.model.dropout, float)
    assert out.model.use_attention is False
    assert out.optim.lr == 3e-4 and out.optim.schedule.warmup_steps == 5


def test_overrides_do_not_mutate_input(config):
    before = config.to_dict()
    cfg_lib.apply_overrides(config, ["model.hidden_dim=1"])
    assert config.to_dict() == before


def test_list_and_tuple_overrides(config):
    out = cfg_lib.apply_overrides(config, ["baselines=['mean','ridge']", "tags=x,y"])
    assert out.baselines == ("mean", "ridge")
    assert out.tags == ["x", "y"]
    out = cfg_lib.apply_overrides(config, ["baselines=mean,knn", "tags=[1, 2]"])
    assert out.baselines == ("mean", "knn") and out.tags == [1, 2]
    out = cfg_lib.apply_overrides(config, ["baselines=ridge", "tags="])
    assert out.baselines == ("ridge",) and out.tags == []
    # Brackets without quotes (what a shell leaves of [mean,ridge]) are the same list.
    out = cfg_lib.apply_overrides(config, ["baselines=[mean, ridge]", "tags=[x]"])
    assert out.baselines == ("mean", "ridge") and out.tags == ["x"]


def test_none_field_takes_any_literal(config):
    assert cfg_lib.apply_overrides(config, ["extra=5"]).extra == 5
    # ConfigDict turns assigned dicts into nested configs.
    assert cfg_lib.apply_overrides(config, ["extra={'a': 1}"]).extra.to_dict() == {"a": 1}
    assert cfg_lib.apply_overrides(config, ["extra=hello"]).extra == "hello"


def test_typed_placeholder():
    config = ml_collections.ConfigDict({"steps": config_dict.placeholder(int)})
    assert cfg_lib.apply_overrides(config, ["steps=7"]).steps == 7
    assert cfg_lib.apply_overrides(config, ["steps=None"]).steps is None
    with pytest.raises(ValueError, match=r"'steps'.*int"):
        cfg_lib.apply_overrides(config, ["steps=many"])


def test_overriding_a_reference_updates_its_users():
    config = ml_collections.ConfigDict({"lr": 0.1, "optim": {}})
    config.optim.lr = config.get_ref("lr")
    out = cfg_lib.apply_overrides(config, ["lr=0.5"])
    assert out.optim.lr == 0.5 and config.optim.lr == 0.1


def test_unknown_nested_key_suggests_close_match(config):
    with pytest.raises(ValueError, match=r"'model\.hiden_dim'.*did you mean model\.hidden_dim"):
        cfg_lib.apply_overrides(config, ["model.hiden_dim=3"])
    with pytest.raises(ValueError, match=r"'modle'.*did you mean model"):
        cfg_lib.apply_overrides(config, ["modle.hidden_dim=3"])
    with pytest.raises(ValueError, match=r"'optim\.schedule\.warmup'.*warmup_steps"):
        cfg_lib.apply_overrides(config, ["optim.schedule.warmup=3"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("model.hidden_dim=1.5", r"'1\.5'.*'model\.hidden_dim'.*int"),
        ("model.dropout=high", r"'high'.*'model\.dropout'.*float"),
        ("model.use_attention=yes", r"'yes'.*'model\.use_attention'.*bool"),
        ("model=3", r"nested config"),
        ("seed.x=3", r"'seed' holds a int value, not a nested config"),
        ("fold", r"dotted\.key=value"),
    ],
)
def test_bad_overrides_raise(config, override, match):
    with pytest.raises(ValueError, match=match):
        cfg_lib.apply_overrides(config, [override])


# config_to_json


def test_config_to_json_round_trip(config):
    text = cfg_lib.config_to_json(config)
    data = json.loads(text)
    assert data["baselines"] == ["mean"]
    assert list(data) == sorted(data) and list(data["model"]) == sorted(data["model"])
    assert text.startswith('{\n  "')
    restored = ml_collections.ConfigDict(data)
    assert cfg_lib.config_to_json(restored) == text
    # Tuples come back as lists; everything else is unchanged.
    expected = config.to_dict()
    expected["baselines"] = list(expected["baselines"])
    assert data == expected
