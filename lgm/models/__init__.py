"""The models layer: layers with hand-written gradients (``nn``), likelihood heads (``heads``),
VAEs and their training (``vae``, ``training``: the one minibatch loop), and the linear-Gaussian
models (``linear``: PPCA, factor analysis). Public names are reached as ``lgm.nn``, ``lgm.vae``,
``lgm.PPCA``, ``lgm.FactorAnalysis``."""
