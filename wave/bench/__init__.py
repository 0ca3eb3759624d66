"""`wave bench`: WAVE against other initialisations over a grid of model sizes.
Its modules and what each holds: docs/design.md, section 4 ("bench")."""
