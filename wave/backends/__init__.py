"""Array-library backends: `numpy` (the reference) and `torch` (training); docs/design.md, section 4."""
