"""
Several instances, one limit: two `twistd -n popproxy` processes with
C{[limits] store = "redis://…"} in front of one upstream share their
brute-force counters through a real Redis, so failures on one instance
block the address on the other.  With Redis killed, logins still work on
the instances' own counters, with one warning each.
"""

from __future__ import annotations

from typing import Any

from tests.peers.rawpop3 import RawPop3Server
from tests.test_e2e_throttle import exchange

CONFIG = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]
login_failure_delay = 0
[upstream]
default = "tcp:127.0.0.1:%d"
[tls]
require = "never"
[limits]
store = "redis://127.0.0.1:%d/0?timeout=0.5"
[limits.logins]
delay = 0.2
max_delay = 0.4
block_after = 10
new_account_weight = 5
"""

BLOCKED = b"-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n"


def test_twoInstancesShareOneBlock(rawPop3: Any, popproxyFactory: Any, redis: Any) -> None:
    """
    Two failures over two accounts on instance A block 127.0.0.1 on
    instance B too: B refuses it at USER and sends the upstream nothing for
    it, while 127.0.0.2 logs in through B.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    first = popproxyFactory(CONFIG % (server.port, redis.port))
    second = popproxyFactory(CONFIG % (server.port, redis.port))
    for account in (b"user0", b"user1"):
        answers = exchange(first.port, [b"USER " + account, b"PASS wrong"])
        assert answers[2].startswith(b"-ERR [AUTH]"), answers
    before = list(server.commands)
    answers = exchange(second.port, [b"USER user2", b"PASS wrong"])
    assert answers[1:] == [BLOCKED, b""], answers + [second.log().encode()]
    assert [c for c in server.commands[len(before) :] if c.startswith((b"USER", b"PASS"))] == []
    answers = exchange(second.port, [b"USER alice", b"PASS secret"], source="127.0.0.2")
    assert answers[2] == b"+OK logged in\r\n", answers


def test_redisDownLoginsStillWork(rawPop3: Any, popproxyFactory: Any, redis: Any) -> None:
    """
    With Redis killed, a right password still logs in (the instance counts
    on its own) and the log says so once, however many logins follow.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    proxy = popproxyFactory(CONFIG % (server.port, redis.port))
    answers = exchange(proxy.port, [b"USER alice", b"PASS secret"], source="127.0.0.2")
    assert answers[2] == b"+OK logged in\r\n", answers
    redis.kill()
    for _ in range(3):
        answers = exchange(proxy.port, [b"USER alice", b"PASS secret"], source="127.0.0.2")
        assert answers[2] == b"+OK logged in\r\n", answers + [proxy.log().encode()]
    warnings = [line for line in proxy.log().splitlines() if "#warn" in line and "redis" in line]
    assert len(warnings) == 1, proxy.log()
