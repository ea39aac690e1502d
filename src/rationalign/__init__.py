"""rationalign: distil large text classifiers into small students that are right for the right reasons."""

__version__ = "0.1.0"
