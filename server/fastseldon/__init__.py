"""fastseldon: serve an unchanged Seldon ``MyModel`` class fast, over Seldon v1 and V2."""

__version__ = "0.1.0"
__all__ = ["__version__"]
