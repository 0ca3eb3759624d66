"""Files and data on disk: safetensors primitives (storage.py), learngene, model and checkpoint
files (files.py), Hugging Face folders (hf.py), datasets (datasets.py) and inspection
(inspect.py). NumPy and safetensors only: nothing here needs torch.
"""
