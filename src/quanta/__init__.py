"""quanta: the science of neural scaling, built around the Quantization Model.

Michaud, Liu, Girit, Tegmark, "The Quantization Model of Neural Scaling", NeurIPS 2023.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
