"""jointspace: search image-text collections in one joint embedding space."""

__version__ = "0.1.0"
