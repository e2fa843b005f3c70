"""Test and benchmark helpers, kept out of the installed package: generated media (`synthetic`), the
HTTP load generator (`loadgen`) and Chromium with a fake webcam (`browser`). Importable as
`dfd_testkit` from pytest (pyproject's `pythonpath`) and, in the development environment made by
scripts/install.sh, from scripts, benchmarks and the notebook (a .pth file puts tests/ on the path)."""
