"""Image references: ``[registry/]path[:tag][@sha256:<hex>]``, Docker's grammar without its
``docker.io/library/`` normalization (a local name stays as written).

A first path component is a registry when it contains ``.`` or ``:`` or is ``localhost``, exactly as
Docker decides it, so ``localhost:5000/model:q4`` and ``ghcr.io/org/model`` push where they say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ggufpack.errors import UsageError

DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; ``tag`` is ``latest`` when neither tag nor digest was given."""

    registry: str | None
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository``, or just ``repository`` for a local name."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _fail(text: str, why: str) -> UsageError:
    return UsageError(f"invalid image reference {text!r}: {why}")


def _is_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _check_path_component(text: str, component: str) -> None:
    if _PATH_COMPONENT.fullmatch(component):
        return
    if not component:
        raise _fail(text, "the name has an empty path component (check for '//' or a trailing '/')")
    if component.lower() != component and _PATH_COMPONENT.fullmatch(component.lower()):
        raise _fail(text, f"repository names must be lowercase (got {component!r})")
    raise _fail(
        text,
        f"path component {component!r} may hold only a-z, 0-9 and single separators "
        "('.', '_', '__' or dashes) between letters or digits",
    )


def _split_tag(text: str, rest: str) -> tuple[str, str | None]:
    """Split ``name[:tag]``; a ``:`` before the last ``/`` belongs to a registry port."""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon <= slash:
        return rest, None
    name, tag = rest[:colon], rest[colon + 1 :]
    if not _TAG.fullmatch(tag):
        raise _fail(
            text,
            f"tag {tag!r} must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-' "
            "and must not start with '.' or '-'",
        )
    return name, tag


def parse_reference(text: str) -> Reference:
    """Parse ``text`` or raise :class:`UsageError` saying which rule it breaks."""
    if not text or not text.strip():
        raise _fail(text, "it is empty")
    if text != text.strip():
        raise _fail(text, "it has leading or trailing whitespace")
    rest, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise _fail(text, "a digest must be 'sha256:' followed by 64 lowercase hex digits")
    name, tag = _split_tag(text, rest)
    if not name:
        raise _fail(text, "the repository name is missing")
    if len(name) > MAX_NAME_LENGTH:
        raise _fail(text, f"the name is longer than {MAX_NAME_LENGTH} characters")
    components = name.split("/")
    registry: str | None = None
    if len(components) > 1 and _is_registry(components[0]):
        registry = components.pop(0)
        if not _REGISTRY.fullmatch(registry):
            raise _fail(text, f"registry {registry!r} is not a valid host name with an optional :port")
    for component in components:
        _check_path_component(text, component)
    repository = "/".join(components)
    if registry is None and _IMAGE_ID.fullmatch(repository):
        raise _fail(text, "a 64-character hex string is an image ID, not a repository name")
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest if at else None)


def canonical_reference(text: str) -> str:
    """The canonical string of ``text`` (``model`` → ``model:latest``)."""
    return str(parse_reference(text))
