"""Image references as the docker CLI reads them: name and digest, the registry host, and the
short form a progress line shows (shared by docker_image and its LAN transfers)."""

from __future__ import annotations


def split_ref(ref: str) -> tuple[str, str]:
    """``repo:tag@sha256:...`` -> (``repo:tag``, ``sha256:...``); the digest may be empty."""
    name, _, digest = ref.partition("@")
    return name, digest


def registry_of(name: str) -> str | None:
    """The registry host of a reference, None for Docker Hub (as the docker CLI decides)."""
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def short_ref(ref: str) -> str:
    """``repo:tag@sha256:<12 hex>`` without the registry host: what fits a progress line."""
    name, digest = split_ref(ref)
    if registry_of(name):
        name = name.split("/", 1)[1]
    return f"{name}@{digest[:19]}" if digest else name


__all__ = ["registry_of", "short_ref", "split_ref"]
