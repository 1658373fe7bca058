"""Interactive ipywidgets explorers (lessons 02-04 and 08)."""

__all__: list[str] = []
