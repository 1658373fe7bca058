"""Attention maps over image patches (lesson 09)."""

__all__: list[str] = []
