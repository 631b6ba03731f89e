"""gradnorm's version: the library's gn_version(), the Python package's
__version__ and the wheel's name all come from here."""

GRADNORM_VERSION = "0.4.0"
