"""The one YAML reader of Atlas: recipes, schema files, the vocabulary, sheets and the reference sheet.

PyYAML's safe loader keeps the last of two equal keys without a word, expands aliases (``&a`` / ``*a``: a
"billion laughs" file of a few hundred bytes is 10**9 items), recurses once per level of nesting and reads
``"\\ud800"`` as a lone surrogate, which no UTF-8 file or hash can hold. Here a key named twice in one
mapping and any alias are refused before anything is built, and so are a lone surrogate and nesting too deep
for the parser: each as a ``yaml.YAMLError`` whose ``problem_line`` is one line naming the line of
the file and the fix, which the caller wraps in its own error (``LabError``, ``SheetError``, ...).

    >>> load_yaml("a: 1\\nb: 2\\n")
    {'a': 1, 'b': 2}
    >>> try:
    ...     load_yaml("a: 1\\na: 2\\n")
    ... except yaml.YAMLError as exc:
    ...     print(problem_line(exc))
    line 2: key 'a' appears twice in one mapping; keep one
"""

from __future__ import annotations

import yaml

__all__ = ["load_yaml", "problem_line"]


class _Strict(yaml.SafeLoader):
    """The safe loader, refusing aliases before they are expanded and a key named twice in one mapping."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"YAML alias *{event.anchor} refused: aliases (&name / "
                                              "*name) are not read here; write the values out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_scalar(self, node):
        value = super().construct_scalar(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"a lone surrogate ({ascii(value[exc.start])}) is not text; fix the \\u escape",
                node.start_mark) from None
        return value

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} appears twice in one mapping; keep one", key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``text`` parsed as YAML by the strict safe loader; a ``yaml.YAMLError`` for anything it refuses."""
    try:
        return yaml.load(text, Loader=_Strict)  # noqa: S506 -- a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply to read") from None


def problem_line(exc: yaml.YAMLError) -> str:
    """One line saying what is wrong with the YAML and where: ``line N: problem``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = " ".join(f"{problem}{f' ({context})' if context else ''}".split())
    return f"line {mark.line + 1}: {text}" if mark is not None else text

