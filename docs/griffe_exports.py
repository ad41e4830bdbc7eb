"""A Griffe extension (``mkdocs.yml``: mkdocstrings' ``extensions``): the names ``atlas`` exports lazily.

``atlas/__init__.py`` imports its public names on first use (PEP 562), from the table ``_EXPORTS`` (private
module -> names), so that ``import atlas`` stays fast; read statically, the package holds none of them. This
reads that table and makes each name a member of ``atlas``, an alias of the object it names, so the API page
documents them where users import them from.
"""

import ast

from griffe import Alias, Extension


class LazyExports(Extension):
    def on_module_members(self, *, mod, **_) -> None:
        if mod.path != "atlas" or "_EXPORTS" not in mod.members:
            return
        for module, names in ast.literal_eval(str(mod.members["_EXPORTS"].value)).items():
            for name in names:
                mod.set_member(name, Alias(name, f"atlas{module}.{name}", parent=mod))
