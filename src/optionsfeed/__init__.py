"""optionsfeed: live options market data, from source to browser."""

__version__ = "0.1.0"
