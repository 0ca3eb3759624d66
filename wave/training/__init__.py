"""The training engine: one deterministic, resumable, multi-process loop for any classifier.
Its modules and what each holds: docs/design.md, section 4 ("training")."""
