"""HParams: the TF 1.15 ``hparam_test.py`` cases (spec 8.5) plus property tests."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnrun.hparams import HParams, parse_values


def _some() -> HParams:
    return HParams(aaa=1, b=2.0, c_c="relu6", d="/a/b=c/d")


# 8.5.1
def test_empty():
    hp = HParams()
    assert hp.values() == {}
    hp.parse("")
    assert hp.values() == {}
    with pytest.raises(ValueError, match="Unknown hyperparameter"):
        hp.parse("xyz=123")


# 8.5.2
def test_contains():
    hp = HParams(foo=1)
    assert "foo" in hp
    assert "bar" not in hp


# 8.5.3
def test_some_values():
    hp = _some()
    assert hp.values() == {"aaa": 1, "b": 2.0, "c_c": "relu6", "d": "/a/b=c/d"}
    hp.parse("aaa=12")
    assert hp.values() == {"aaa": 12, "b": 2.0, "c_c": "relu6", "d": "/a/b=c/d"}
    assert hp.aaa == 12
    hp.parse("c_c=relu4, b=-2.0e10")
    assert hp.c_c == "relu4" and hp.b == -2.0e10
    hp.parse("c_c=,b=0,")
    assert hp.c_c == "" and hp.b == 0.0 and isinstance(hp.b, float)
    hp.parse('c_c=2.3",b=+2,')
    assert hp.b == 2.0 and hp.c_c == '2.3"'
    hp.parse("d=/a/b/c/d,aaa=11,")
    assert hp.d == "/a/b/c/d" and hp.aaa == 11
    hp.parse("b=1.5,d=/a=b/c/d,aaa=10,")
    assert (hp.b, hp.d, hp.aaa) == (1.5, "/a=b/c/d", 10)
    before = hp.values()
    with pytest.raises(ValueError, match="Unknown hyperparameter"):
        hp.parse("x=123")
    for bad in ["aaa=poipoi", "aaa=1.0", "b=12x", "b=relu"]:
        with pytest.raises(ValueError, match="Could not parse"):
            hp.parse(bad)
    with pytest.raises(ValueError, match="Must not pass a list"):
        hp.parse("aaa=[123]")
    assert hp.values() == before  # failed parses change nothing
    # Round trip (TF used the proto; learnrun uses JSON): types survive.
    hp2 = HParams(aaa=0, b=0.0, c_c="", d="").parse_json(hp.to_json())
    assert hp2.values() == hp.values()
    assert [type(v) for v in hp2.values().values()] == [int, float, str, str]


def test_str_and_repr_are_the_115_forms():
    # spec 9.2: learnrun follows the 1.15 code, not the older tests.
    hp = _some()
    assert str(hp) == "aaa=1,b=2.0,c_c=relu6,d=/a/b=c/d"
    assert repr(hp) == "HParams([('aaa', 1), ('b', 2.0), ('c_c', 'relu6'), ('d', '/a/b=c/d')])"

    class MyParams(HParams):
        pass

    assert repr(MyParams(z=1, a=2)) == "MyParams([('a', 2), ('z', 1)])"


def test_atomic_parse_keeps_earlier_values_on_failure():
    hp = _some()
    with pytest.raises(ValueError, match="Must not pass a list"):
        hp.parse("b=5.0,aaa=[1]")
    assert hp.b == 2.0


def test_malformed_text():
    hp = _some()
    with pytest.raises(ValueError, match="Malformed hyperparameter value:  aaa=1"):
        hp.parse(" aaa=1")
    with pytest.raises(ValueError, match="Malformed hyperparameter value: aaa"):
        hp.parse("aaa")
    with pytest.raises(ValueError, match="Malformed hyperparameter value: 1aaa=1"):
        hp.parse("b=1,1aaa=1")
    with pytest.raises(ValueError, match="must be a string"):
        hp.parse(None)


# 8.5.4
def test_with_period_in_variable_name():
    hp = HParams()
    hp.add_hparam("a.b", 0.0)
    hp.parse("a.b=1.0")
    assert getattr(hp, "a.b") == 1.0
    hp.add_hparam("c.d", 0.0)
    with pytest.raises(ValueError, match="Could not parse"):
        hp.parse("c.d=abc")
    hp.add_hparam("e.f", "")
    hp.parse("e.f=abc")
    assert getattr(hp, "e.f") == "abc"
    hp.add_hparam("d..", 0.0)
    hp.parse("d..=10.0")
    assert getattr(hp, "d..") == 10.0


# 8.5.5
def test_set_from_map():
    hp = HParams(a=1, b=2.0, c="tanh")
    hp.override_from_dict({"a": -2, "c": "identity"})
    assert hp.values() == {"a": -2, "b": 2.0, "c": "identity"}
    hp = HParams(x=1, d=[0.5])
    hp.override_from_dict({"d": [0.1, 0.2, 0.3]})
    assert hp.d == [0.1, 0.2, 0.3]
    hp.set_from_map({"x": 7})
    assert hp.x == 7
    with pytest.raises(ValueError, match="mapping"):
        hp.override_from_dict([("x", 1)])


# 8.5.6 (TF master-era; optional in 1.15): callables are left out of to_json
def test_function_values_are_left_out_of_json():
    def f(x):
        return x

    hp = HParams(function=f)
    assert hp.function is f
    assert hp.to_json() == "{}"


# 8.5.7
@pytest.mark.parametrize("value", ["true", "false", "True", "False", "1", "0"])
@pytest.mark.parametrize("initial", [False, True])
def test_bool_parsing(value, initial):
    hp = HParams(use_gpu=initial)
    hp.parse("use_gpu=" + value)
    assert hp.use_gpu == (value in ["True", "true", "1"])
    assert type(hp.use_gpu) is bool
    back = HParams(use_gpu=not hp.use_gpu).parse_json(hp.to_json())
    assert back.use_gpu is hp.use_gpu


def test_bool_parsing_of_other_integers():
    hp = HParams(flag=False)
    assert hp.parse("flag=2").flag is True


# 8.5.8
def test_bool_parsing_fail():
    hp = HParams(use_gpu=True)
    with pytest.raises(ValueError, match=r"Could not parse.*use_gpu"):
        hp.parse("use_gpu=yep")


# 8.5.9
def test_lists():
    hp = HParams(aaa=[1], b=[2.0, 3.0], c_c=["relu6"])
    assert hp.values() == {"aaa": [1], "b": [2.0, 3.0], "c_c": ["relu6"]}
    hp.parse("aaa=[12]")
    assert hp.aaa == [12]
    hp.parse("aaa=[12,34,56]")
    assert hp.aaa == [12, 34, 56]
    hp.parse("c_c=[relu4,relu12],b=[1.0]")
    assert hp.c_c == ["relu4", "relu12"] and hp.b == [1.0]
    hp.parse("c_c=[],aaa=[-34]")
    assert hp.c_c == [] and hp.aaa == [-34]
    hp.parse("c_c=[_12,3'4\"],aaa=[+3]")
    assert hp.c_c == ["_12", "3'4\""] and hp.aaa == [3]
    hp.parse("aaa=[1 2, 3]")
    assert hp.aaa == [1, 2, 3]
    with pytest.raises(ValueError, match="Unknown hyperparameter"):
        hp.parse("x=[123]")
    for bad in ["aaa=[poipoi]", "aaa=[1.0]", "b=[12x]", "b=[relu]"]:
        with pytest.raises(ValueError, match="Could not parse"):
            hp.parse(bad)
    with pytest.raises(ValueError, match="Must pass a list"):
        hp.parse("aaa=123")
    with pytest.raises(
        ValueError,
        match=r"Could not parse hparam 'aaa' of type 'int' with value '1,x' in aaa=\[1,x\]",
    ):
        hp.parse("aaa=[1,x]")
    back = HParams(aaa=[0], b=[0.0], c_c=[""]).parse_json(hp.to_json())
    assert back.values() == hp.values()


def test_empty_list_value_is_rejected():
    with pytest.raises(ValueError, match="Multi-valued hyperparameters cannot be empty: x"):
        HParams(x=[])


# 8.5.10
def test_parse_values_with_index_assignment():
    assert parse_values("arr[1]=10", {"arr": int}) == {"arr": {1: 10}}
    assert parse_values("arr[0]=10,arr[5]=20", {"arr": int}) == {"arr": {0: 10, 5: 20}}
    assert parse_values("arr[0]=10,brr[5]=20", {"arr": int, "brr": int}) == {
        "arr": {0: 10},
        "brr": {5: 20},
    }
    got = parse_values("x=10,arr[1]=20,y=30", {"x": int, "y": int, "arr": int})
    assert got == {"x": 10, "arr": {1: 20}, "y": 30}
    got = parse_values(
        "a[0]=5,b[1]=true,c[2]=abc,d[3]=3.14", {"a": int, "b": bool, "c": str, "d": float}
    )
    assert got == {"a": {0: 5}, "b": {1: True}, "c": {2: "abc"}, "d": {3: 3.14}}
    assert parse_values("arr[ 2 ] = 7", {"arr": int}) == {"arr": {2: 7}}
    assert parse_values("x=5,L=[1,2],arr[1]=3", {"x": int, "L": int, "arr": int}) == {
        "x": 5,
        "L": [1, 2],
        "arr": {1: 3},
    }


def test_index_assignment_through_parse_fails_like_tf():
    hp = HParams(arr=[1, 2])
    with pytest.raises(ValueError, match="Must pass a list"):
        hp.parse("arr[0]=5")


# 8.5.11
def test_parse_values_ignore_unknown():
    assert parse_values("x=1,B[0]=kkk,foo=bar", {"x": int}, ignore_unknown=True) == {"x": 1}
    assert parse_values("arr[1]=10,b=5", {"b": int}, ignore_unknown=True) == {"b": 5}


# 8.5.12
def test_bad_index_assignment():
    for ignore in (False, True):
        with pytest.raises(ValueError, match=r"Assignment of a list to a list index\."):
            parse_values("arr[1]=[1,2,3]", {"arr": int}, ignore_unknown=ignore)
    with pytest.raises(ValueError, match="Unknown hyperparameter type for arr"):
        parse_values("arr[1]=5", {})
    assert parse_values("arr[1]=5", {}, ignore_unknown=True) == {}
    with pytest.raises(ValueError, match="Unknown hyperparameter type for arr"):
        parse_values("arr[1]=5", {"arr[1]": int})
    assert parse_values("arr[1]=5", {"arr[1]": int}, ignore_unknown=True) == {}


# 8.5.13
def test_with_reused_variables():
    with pytest.raises(ValueError, match="Multiple assignments to variable 'x'"):
        parse_values("x=1,x=1", {"x": int})
    with pytest.raises(ValueError, match="Multiple assignments to variable 'arr'"):
        parse_values("arr=[100,200],arr[0]=10", {"arr": int})
    with pytest.raises(ValueError, match=r"Multiple assignments to variable 'arr\[0\]'"):
        parse_values("arr[0]=10,arr[0]=20", {"arr": int})
    with pytest.raises(ValueError, match="Multiple assignments to variable 'arr'"):
        parse_values("arr[0]=10,arr=[100]", {"arr": int})


# 8.5.14
def test_json():
    hp = HParams(aaa=1, b=2.0, c_c="relu6", d=True)
    hp.parse_json('{"aaa": 12, "b": 3.0, "c_c": "relu4", "d": false}')
    assert hp.values() == {"aaa": 12, "b": 3.0, "c_c": "relu4", "d": False}
    hp2 = HParams(aaa=10, b=20.0, c_c="hello", d=False).parse_json(hp.to_json())
    assert hp2.values() == hp.values()
    hp = HParams(aaa=123)
    assert hp.to_json() == '{"aaa": 123}'
    assert hp.to_json(indent=2) == '{\n  "aaa": 123\n}'
    assert hp.to_json(separators=(";", "=")) == '{"aaa"=123}'
    hp = HParams(aaa=123, c_c=False, b="hello")
    assert hp.to_json(sort_keys=True) == '{"aaa": 123, "b": "hello", "c_c": false}'
    with pytest.raises(ValueError, match="Could not parse hparams JSON"):
        hp.parse_json("{aaa: 1")
    with pytest.raises(ValueError, match="must be an object"):
        hp.parse_json("[1]")


# 8.5.15
def test_set_hparam():
    hp = HParams(aaa=1, b=2.0, c_c="relu6", d=True)
    hp.set_hparam("aaa", 12)
    hp.set_hparam("b", 3.0)
    hp.set_hparam("c_c", "relu4")
    hp.set_hparam("d", False)
    assert hp.values() == {"aaa": 12, "b": 3.0, "c_c": "relu4", "d": False}
    with pytest.raises(KeyError, match="Unknown hyperparameter 'zzz'"):
        hp.set_hparam("zzz", 1)


# 8.5.16
def test_set_hparam_list_non_list_mismatch():
    hp = HParams(a=1, b=[2.0, 3.0])
    with pytest.raises(ValueError, match="Must not pass a list for single-valued parameter: a"):
        hp.set_hparam("a", [1.0])
    with pytest.raises(ValueError, match=r"Must pass a list for multi-valued parameter: b\."):
        hp.set_hparam("b", 1.0)
    hp.set_hparam("b", (4, 5))  # tuples count as lists; ints widen to float
    assert hp.b == [4.0, 5.0] and all(type(v) is float for v in hp.b)


# 8.5.17
def test_set_hparam_type_mismatch():
    hp = HParams(int_=1, str_="str", bool_=True, float_=1.1, list_int=[1, 2], none=None)
    for name, value in [
        ("str_", 2.2),
        ("int_", False),
        ("bool_", 1),
        ("int_", 2.2),
        ("list_int", [2, 3.3]),
        ("int_", "2"),
    ]:
        with pytest.raises(ValueError, match=f"Could not cast hparam '{name}'"):
            hp.set_hparam(name, value)
    hp.set_hparam("float_", 1)
    assert hp.float_ == 1.0 and type(hp.float_) is float
    hp.set_hparam("none", "1")
    assert hp.none == "1"
    with pytest.raises(
        ValueError, match=r"Could not cast hparam 'int_' of type '<class 'int'>' from value 'x'"
    ):
        hp.set_hparam("int_", "x")


# 8.5.18
def test_set_hparam_exact_type_match():
    class DummyContext:
        def __init__(self, a, b=0):
            self.a = a
            self.b = b

    hp = HParams(x=DummyContext(a=100, b=100))
    new = DummyContext(a=10, b=20)
    hp.set_hparam("x", new)
    assert hp.x is new


def test_set_hparam_object_type_that_cannot_be_built():
    class Thing:
        pass

    hp = HParams(x=Thing())
    with pytest.raises(ValueError, match="Could not cast hparam 'x'"):
        hp.set_hparam("x", 5.0)


# 8.5.19 (deviation: no protocol buffers, so every hparam_def is refused)
@pytest.mark.parametrize("hparam_def", [1, 1.0, "hello", [1, 2, 3]])
def test_hparam_def_is_not_supported(hparam_def):
    with pytest.raises(NotImplementedError, match="hparam_def=.*not supported.*keyword arguments"):
        HParams(hparam_def=hparam_def)


def test_model_structure():
    hp = HParams(model_structure={"layers": 2}, a=1)
    assert hp.get_model_structure() == {"layers": 2}
    hp.set_model_structure("other")
    assert hp.get_model_structure() == "other"
    assert "model_structure" not in hp


# 8.5.20
def test_get():
    hp = HParams(aaa=1, b=2.0, c_c="relu6", d=True, e=[5.0, 6.0])
    for key, value in hp.values().items():
        assert hp.get(key) == value
        assert hp.get(key, None) == value
    for key, default in [
        ("aaa", 2),
        ("b", 3.0),
        ("b", 3),
        ("c_c", "default"),
        ("d", True),
        ("e", [1.0, 2.0, 3.0]),
        ("e", [1, 2, 3]),
    ]:
        assert hp.get(key, default) == getattr(hp, key)
    for key, default in [
        ("aaa", 2.0),
        ("b", False),
        ("c_c", [1, 2, 3]),
        ("d", "relu"),
        ("e", 123.0),
        ("e", ["a", "b", "c"]),
    ]:
        with pytest.raises(ValueError, match=f"Hparam '{key}' of type .* is incompatible with"):
            hp.get(key, default)
    assert hp.get("unknown") is None
    assert hp.get("unknown", 123) == 123
    assert hp.get("unknown", [1, 2, 3]) == [1, 2, 3]


# 8.5.21
def test_del():
    hp = HParams(aaa=1, b=2.0)
    with pytest.raises(ValueError, match=r"Could not cast hparam 'aaa' .* from value 'will fail'"):
        hp.set_hparam("aaa", "will fail")
    with pytest.raises(ValueError, match="Hyperparameter name is reserved: aaa"):
        hp.add_hparam("aaa", "will fail")
    hp.del_hparam("aaa")
    hp.add_hparam("aaa", "will work")
    assert hp.get("aaa") == "will work"
    hp.set_hparam("aaa", "still works")
    assert hp.get("aaa") == "still works"
    hp.del_hparam("not_there")  # no-op
    hp.del_hparam("parse")  # a method is not a hyperparameter: no-op
    assert callable(hp.parse)


def test_reserved_names():
    for name in ["parse", "values", "get", "to_json", "_hparam_types", "_x"]:
        with pytest.raises(ValueError, match=f"Hyperparameter name is reserved: {name}"):
            HParams().add_hparam(name, 1)
    hp = HParams(a=None)
    hp.add_hparam("a", 3)  # TF: a None-valued hparam may be re-added
    assert hp.a == 3


def test_none_typed_hparam_parse_is_a_value_error():
    hp = HParams(x=None)
    with pytest.raises(ValueError, match="Could not parse hparam 'x' of type 'NoneType'"):
        hp.parse("x=1")


# -- properties ------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("abcxyz_.019 =,[]-+eE'\"\n\t") + ["true", "[1,2]", "é"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_parse_arbitrary_text_raises_only_value_error(text):
    hp = HParams(a=1, b=2.0, c="s", x=True, y=[1, 2], z=["u"], n=None)
    before = hp.values()
    try:
        hp.parse(text)
    except ValueError:
        assert hp.values() == before
    for name, (ptype, is_list) in hp._hparam_types.items():
        value = getattr(hp, name)
        if ptype is not type(None):
            if is_list:
                assert isinstance(value, list) and all(type(v) is ptype for v in value)
            else:
                assert type(value) is ptype


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_any_unicode_raises_only_value_error(text):
    hp = HParams(a=1, b=2.0, c="s", x=True, y=[1, 2], z=["u"])
    try:
        hp.parse(text)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_characters=",[]", blacklist_categories=("Cs",))),
    st.booleans(),
)
def test_json_round_trip(i, f, s, b):
    hp = HParams(i=i, f=f, s=s, b=b)
    back = HParams(i=0, f=0.0, s="", b=False).parse_json(hp.to_json())
    assert back.values() == hp.values()
    assert json.loads(hp.to_json()) == hp.values()


# -- bad input: one clear error naming the value ------------------------------------------
@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda hp: hp.parse(None), ValueError, r"must be a string like 'a=1,b=\[2,3\]', got None"),
        (lambda hp: hp.parse(3), ValueError, r"must be a string like .*got 3"),
        (lambda hp: hp.parse_json("[1]"), ValueError, r"must be an object like .*got '\[1\]'"),
        (lambda hp: hp.override_from_dict([1]), ValueError, r"expects a mapping .*got \[1\]"),
        (
            lambda hp: hp.set_hparam("zz", 1),
            KeyError,
            r"Unknown hyperparameter 'zz'; known: \['a'\]",
        ),
        (lambda hp: hp.parse_json('{"zz": 1}'), KeyError, r"Unknown hyperparameter 'zz'"),
        (lambda hp: hp.add_hparam(3, 1), ValueError, r"names must be non-empty strings, got 3"),
        (lambda hp: hp.add_hparam("", 1), ValueError, r"names must be non-empty strings, got ''"),
        (lambda hp: hp.parse(" a=1"), ValueError, r"Malformed hyperparameter value:  a=1"),
        (lambda hp: hp.parse("a=1;b=2"), ValueError, r"with value '1;b=2' in a=1;b=2"),
    ],
)
def test_bad_input_errors(call, error, message):
    hp = HParams(a=1)
    with pytest.raises(error, match=message):
        call(hp)
    assert hp.values() == {"a": 1}
