"""Process tuning that changes how fast the registry runs, never what it answers.

`affinity`: each worker's network runtime on a CPU of its own (setting `cpu_affinity`);
`collector`: Python's cyclic garbage collector paused during bulk report phases. Kept apart
from the registry's own garbage collection (`prune/gc.py`), which deletes blobs.
"""
