"""GPU backend: the CUDA kernels of ``kernels/*.cu`` through CuPy.

- ``sources``: the .cu files, their kernel names and launch constants, read from the source text
  (no cupy needed; one inventory, so nothing "must match" by comment);
- ``launch``: launch arithmetic (grids, vector widths), cupy-free and unit-tested anywhere;
- ``launchers``: loading (fatbin or NVRTC) and the launchers, twins of the CPU kernels. Imported
  only when a cupy array arrives (it imports cupy).
"""
