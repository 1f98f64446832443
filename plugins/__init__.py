"""
The filter plugins shipped with popproxy.

They are written on the public plugin API only, exactly as users write
theirs, and installed as the package C{popproxy.plugins} (never as a
top-level C{plugins} module).  A configuration names them by their file
name: C{plugin = "strip"}.
"""
