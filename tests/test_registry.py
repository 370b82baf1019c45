"""registry.py: components by name, their arguments checked against the factory's signature."""

import pytest

from fedjax_compress.registry import ComponentError, Registry, check_arguments


def test_registry_checks_arguments_against_the_signature():
  registry = Registry("widget", context=("size",))

  @registry.register("square")
  def square(size, color="red"):
    return (size, color)

  assert registry.create("square", {"color": "blue"}, size=3) == (3, "blue")
  with pytest.raises(
    ComponentError,
    match="'colour' is not an argument of widget 'square' "
    "\\(did you mean 'color'\\?\\); it takes: color",
  ):
    registry.create("square", {"colour": "blue"}, size=3)
  with pytest.raises(ComponentError, match="unknown widget 'sqaure' \\(did you mean 'square'"):
    registry.create("sqaure", {}, size=3)
  with pytest.raises(ValueError, match="identifier"):
    registry.register("not a name", square)


def test_check_arguments_names_a_missing_required_argument():
  with pytest.raises(ComponentError, match="needs 'stages'"):
    check_arguments("aggregator 'x'", lambda stages, threshold=1: None, {"threshold": 2})
