"""Spectral diagnostics: pure math in `callbacks.spectra`, Lightning callbacks on top of it.

Add them to any Trainer (`Trainer(callbacks=[WeightSpectrum(every_n_steps=100)])`) or switch
them on for a run with `callbacks=spectra` (conf/callbacks/spectra.yaml).
"""

from callbacks.base import SpectralCallback
from callbacks.feature_spectrum import FeatureSpectrum
from callbacks.hessian_spectrum import HessianSpectrum
from callbacks.matrix_spectrum import MatrixSpectrum
from callbacks.ntk_spectrum import NTKSpectrum
from callbacks.sink import SpectrumSink
from callbacks.weight_spectrum import WeightSpectrum

__all__ = ["FeatureSpectrum", "HessianSpectrum", "MatrixSpectrum", "NTKSpectrum",
           "SpectralCallback", "SpectrumSink", "WeightSpectrum"]
