"""pytest fixtures for the real peers; each peer module registers its own here."""

from tests.peers.certs import *  # noqa: F401,F403
from tests.peers.clamd import *  # noqa: F401,F403
from tests.peers.dovecot import *  # noqa: F401,F403
from tests.peers.postgres import *  # noqa: F401,F403
from tests.peers.proxy import *  # noqa: F401,F403
from tests.peers.rawpop3 import *  # noqa: F401,F403
from tests.peers.redis import *  # noqa: F401,F403
from tests.peers.spamd import *  # noqa: F401,F403
