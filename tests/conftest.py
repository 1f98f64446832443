"""Shared pytest configuration: registers the peer fixtures."""

pytest_plugins = ["tests.peers.fixtures"]
