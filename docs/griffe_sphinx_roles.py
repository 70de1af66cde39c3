"""Griffe extension for the API reference (mkdocs.yml): the docstrings cross-reference with
Sphinx roles (:func:`solve`, :class:`~kernelfield.Prediction`, :mod:`.particles`), which
Markdown would show verbatim. Each role becomes inline code, linked to the object's entry
when the name resolves in the docstring's scope and that entry is rendered (an optional
autoref: an object without an entry stays plain code, with no warning). The reST marker of a
literal block, ``text::`` before an indented block, becomes ``text:`` as reST shows it (the
indented block is a code block in Markdown too)."""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`([^`]+)`")
LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)


def resolve(obj: griffe.Object, target: str) -> str | None:
    """Full path of ``target`` as seen from ``obj``'s docstring, or None."""
    if target.startswith("kernelfield"):
        return target
    scope = obj if obj.is_module else obj.parent
    module = obj.module
    if target.startswith("."):
        package = module if module.is_package else module.parent
        return f"{package.path}{target}" if package is not None else None
    head, _, rest = target.partition(".")
    for candidate in (obj, scope):
        if candidate is None:
            continue
        try:
            path = candidate.resolve(head)
        except (griffe.NameResolutionError, ValueError, AttributeError):
            continue
        return f"{path}.{rest}" if rest else path
    return None


def rewrite(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match) -> str:
        target = match.group(1).strip().removesuffix("()")
        shown = target.lstrip("~").split(".")[-1] if target.startswith("~") else target
        target = target.lstrip("~")
        code = f"<code>{html.escape(shown)}</code>"
        path = resolve(obj, target)
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return LITERAL_MARKER.sub(":", ROLE.sub(replace, text))


def documented(obj: griffe.Object):
    """``obj`` and every object defined under it (aliases are documented at their target)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from documented(member)


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in documented(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
