"""The front: the ``lgm`` command (``cli``), the demo and the E-step study (``demo``, ``report``),
fitting and scoring users' files (``fitting``, ``data``), kernel benchmarks (``bench``), progress
bars (``progress``). Plotting and progress bars live here, never in the numerics."""
