"""lmmsae: find and explain the features of large multimodal models with large multimodal models."""

__version__ = "0.1.0"
