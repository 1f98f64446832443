"""
popproxy: a POP3 proxy and filter gateway built on Twisted.
"""

__version__ = "0.1.0"
