"""
popproxy's benchmark: popproxy against nginx's mail proxy and Dovecot itself.

Run it with C{python3 bench/run.py} (see docs/performance.md).  Nothing here
is imported by popproxy or by the tests.
"""
