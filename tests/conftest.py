"""Shared pytest configuration: registers the peer fixtures."""

pytest_plugins = ["tests.peers.fixtures"]


import pytest  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """
    Keep each phase's report on the test item, so fixtures can show their
    peer's log when the test failed.
    """
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
