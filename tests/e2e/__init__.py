"""Browser tests (Playwright + Chromium): a package, so that its conftest does not shadow
tests/conftest.py for the suite's `from conftest import ...`."""
