"""risbench: benchmark image descriptors for reverse image search (Gaillard et al. 2018)."""

import os

__version__ = "0.1.0"

# OpenBLAS's idle worker threads spin for 2^28 cycles (about 0.07 s) after each
# matrix product before they sleep, and so take a core from the numba kernels
# that consume each product block (the sweep's counting kernel took 0.043 s
# instead of 0.024 at n = 7,000, d = 512 on 2 cores). 2^4 cycles instead: a
# worker sleeps at once and is woken for the next product (microseconds).
# OpenBLAS reads it when it loads, so this holds in processes that import
# risbench before NumPy (the CLI, hence every job); a value already set wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
