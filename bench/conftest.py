# pytest-benchmark suites live here, outside the default test paths (pyproject: testpaths=tests).
# Run:  python -m pytest bench/ --benchmark-only   (needs the bench extra; torch optional)
