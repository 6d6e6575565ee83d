"""pionml: deep learning on single-pion calorimeter clusters in the ATLAS barrel."""

__version__ = "0.1.0"
