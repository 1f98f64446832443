"""
Makes C{twistd popproxy} exist.
"""

from twisted.application.service import ServiceMaker

popproxy = ServiceMaker("popproxy", "popproxy.tap", "A POP3 proxy and filter gateway.", "popproxy")
