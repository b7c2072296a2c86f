"""Linear-Gaussian latent models: probabilistic PCA and factor analysis.

- ``estimators``: :class:`PPCA`, :class:`FactorAnalysis` (scikit-learn conventions), thin;
- ``em``: one complete-data EM map (:func:`em_step`) and the SQUAREM-accelerated driver;
- ``sources``: what each kind of data contributes to EM (complete numpy/cupy, its covariance, dask, missing values).
The Woodbury E-step itself is :func:`lgm.lowrank.woodbury_posterior`, shared by all of them.
"""

from .em import ConvergenceWarning, em_step, run_em
from .estimators import FactorAnalysis, PPCA
from .sources import CompleteData, CovarianceData, DaskData, MissingData

__all__ = ["PPCA", "FactorAnalysis", "ConvergenceWarning", "em_step", "run_em", "CompleteData",
           "CovarianceData", "DaskData", "MissingData"]
