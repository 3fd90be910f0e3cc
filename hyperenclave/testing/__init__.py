"""Test support shipped to users: the pytest plugin (hyperenclave.testing.pytest_plugin)."""
