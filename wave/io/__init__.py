"""Files and data on disk, with NumPy and safetensors only: nothing here needs torch.
Its modules and what each holds: docs/design.md, section 4 ("io")."""
