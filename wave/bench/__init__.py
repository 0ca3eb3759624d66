"""`wave bench`: WAVE against other initialisations over a grid of model sizes.

config.py (settings, presets, sizes), records.py (records on disk, compute accounting),
report.py and plots.py (tables and figures from the records; no torch), family.py (ancestry
and learngenes, made once) and runner.py (the cells, with torch).
"""
