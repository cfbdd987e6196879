"""modelrepo: a versioned model repository whose rules live once, here, for every host."""

__version__ = "0.1.0"
