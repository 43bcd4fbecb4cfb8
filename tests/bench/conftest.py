# The benchmark suite is run by tests/bench/run.py, never by pytest.
collect_ignore_glob = ["*"]
