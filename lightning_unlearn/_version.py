"""The package version, in a module of its own so that parts of the package can read it without importing the root.

Examples:
    >>> from lightning_unlearn._version import __version__
    >>> __version__ == __import__("lightning_unlearn").__version__
    True
"""

__version__ = "0.1.0"
