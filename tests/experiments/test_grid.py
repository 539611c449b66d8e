import pytest

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.grid import expand, load_grid

FN = "tests.experiments.fake_cells:quadratic"


def spec(**over):
    base = {"name": "t", "kind": "function", "function": FN, "base": {"steps": 2},
            "axes": {"a": [1.0, 2.0, 3.0], "b": [1, 5]}, "seed": [0, 1]}
    base.update(over)
    return base


def test_expansion_is_the_axis_product_times_seeds():
    grid = expand(spec())
    assert len(grid.cells) == 3 * 2 * 2
    combos = [(c.axes["a"], c.axes["b"], c.seed) for c in grid.cells]
    assert combos == [(a, b, s) for a in (1.0, 2.0, 3.0) for b in (1, 5) for s in (0, 1)]
    assert all(c.params == {"steps": 2, "a": c.axes["a"], "b": c.axes["b"]} for c in grid.cells)
    assert len({c.id for c in grid.cells}) == 12


def test_ids_are_deterministic_readable_and_change_with_base():
    ids1 = [c.id for c in expand(spec()).cells]
    ids2 = [c.id for c in expand(spec()).cells]
    assert ids1 == ids2
    assert ids1[0].startswith("a1.0-b1-seed0-")
    ids3 = [c.id for c in expand(spec(base={"steps": 3})).cells]
    assert set(ids1).isdisjoint(ids3)


def test_string_axis_values_are_slugged():
    grid = expand({"kind": "recipe", "recipe": "r.yaml",
                   "axes": {"model.init_args.scheme": ["orthogonal", "gaussian/x"]}})
    assert [c.id.rsplit("-", 1)[0] for c in grid.cells] == [
        "scheme_orthogonal-seed0", "scheme_gaussian_x-seed0"]


def test_load_grid_reads_yaml(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(f"kind: function\nfunction: {FN}\naxes:\n  a: [1, 2]\nseed: 7\n")
    grid = load_grid(path)
    assert grid.name == "g" and [c.seed for c in grid.cells] == [7, 7]


BAD = [
    ("unknown_top_key", {"axis": {"a": [1]}}, "experiment: keys must be among ['name', "),
    ("unknown_top_key_shown", {"axis": {"a": [1]}}, "(unknown ones listed), got ['axis']"),
    ("empty_axis", {"axes": {"a": []}}, "experiment: axis 'a' must be a non-empty list of values, got []"),
    ("axis_not_list", {"axes": {"a": 3}}, "experiment: axis 'a' must be a non-empty list of values, got 3"),
    ("unknown_param", {"axes": {"a": [1], "depth": [4]}},
     f"experiment: parameters must be among the arguments ['a', 'b', 'steps'] of {FN!r} (unknown ones "
     "listed), got ['depth']"),
    ("bad_kind", {"kind": "shell"}, "experiment: kind must be one of ['function', 'recipe'], got 'shell'"),
    ("bad_function", {"function": "ortho_lightning.experiments.fisher:nope"},
     "experiment: function must be a callable of 'ortho_lightning.experiments.fisher' (it has no callable "
     "'nope'), got 'ortho_lightning.experiments.fisher:nope'"),
    ("not_module_function", {"function": "quadratic"},
     "experiment: function must be a 'module:function' string, got 'quadratic'"),
    ("base_and_axis", {"base": {"a": 1}},
     "experiment: key 'a' must be in 'base' or in 'axes', not in both, got {'base': 1, 'axes': [1.0, 2.0, 3.0]}"),
    ("bad_seed", {"seed": []}, "experiment: seed must be an int or a non-empty list of ints, got []"),
    ("seed_axis", {"axes": {"seed": [0, 1]}},
     "experiment: seed must be at the top level of the file, not in 'axes', got [0, 1]"),
    ("seed_twice", {"seed": [0, 0], "axes": {"a": [1.0]}},
     "experiment: cells must be distinct (a seed listed twice?); repeated ids shown, got ['a1.0-seed0-"),
    ("no_function", {"function": None}, "experiment: function must be set for kind 'function', got None"),
    ("wandb_string", {"wandb": "yes"},
     "experiment: wandb must be true or a mapping of WandbLogger arguments, got 'yes'"),
]


@pytest.mark.parametrize("over,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_specs_raise_naming_the_key(over, message):
    with pytest.raises(ConfigurationError) as err:
        expand(spec(**over))
    assert message in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigurationError, match="^experiment: file must be an existing file, got .*nope.yaml'$"):
        load_grid(tmp_path / "nope.yaml")


def test_variant_axis_sets_several_keys_and_names_the_column():
    grid = expand({"kind": "recipe", "recipe": "r.yaml", "base": {"trainer.max_steps": 5},
                   "axes": {"arm": [{"name": "soft", "regularizer.init_args.weight": 0.5},
                                    {"name": "none", "regularizer": None}],
                            "model.init_args.hidden_size": [8, 16]}})
    assert [(c.axes["arm"], c.axes["model.init_args.hidden_size"]) for c in grid.cells] == [
        ("soft", 8), ("soft", 16), ("none", 8), ("none", 16)]
    assert grid.cells[0].params == {"trainer.max_steps": 5, "regularizer.init_args.weight": 0.5,
                                    "model.init_args.hidden_size": 8}
    assert grid.cells[2].params == {"trainer.max_steps": 5, "regularizer": None,
                                    "model.init_args.hidden_size": 8}
    assert grid.cells[0].id.startswith("arm_soft-hidden_size8-seed0-")


def test_variant_params_of_a_function_are_checked():
    with pytest.raises(ConfigurationError, match=r"\(unknown ones listed\), got \['depth'\]"):
        expand(spec(axes={"v": [{"name": "x", "a": 1.0, "depth": 3}]}))


def test_variant_without_name_is_rejected():
    with pytest.raises(ConfigurationError,
                       match="experiment: axis 'v' must be variants that are all mappings with a string 'name'"):
        expand(spec(axes={"v": [{"a": 1.0}, {"name": "y", "a": 2.0}]}))


def test_a_function_without_seed_is_refused_showing_its_signature():
    with pytest.raises(ConfigurationError, match=r"^experiment: function must be a function with a "
                       r"'seed' keyword argument \(its signature is \(text\)\), got 'textwrap:dedent'$"):
        expand({"kind": "function", "function": "textwrap:dedent", "base": {"text": "x"}},
               allow_import=True)


def test_errors_name_the_grid_file(tmp_path):
    path = tmp_path / "my_grid.yaml"
    path.write_text(f"kind: function\nfunction: {FN}\naxes:\n  a: [1]\nwandb: [p]\n")
    with pytest.raises(ConfigurationError, match=r"^experiment my_grid.yaml: wandb must be true or "
                       r"a mapping of WandbLogger arguments, got \['p'\]$"):
        load_grid(path)


def test_an_unimportable_module_is_named_with_the_import_error():
    with pytest.raises(ConfigurationError, match=r"^experiment: function must be a function of an "
                       r"importable module \(importing 'no_such_pkg_xyz': No module named "
                       r"'no_such_pkg_xyz'\), got 'no_such_pkg_xyz:f'$"):
        expand({"kind": "function", "function": "no_such_pkg_xyz:f"}, allow_import=True)
