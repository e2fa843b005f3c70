"""Test and benchmark helpers, kept out of the installed package: generated media (`synthetic`) and the
HTTP load generator (`loadgen`). Importable as `dfd_testkit` from pytest (pyproject's `pythonpath`)
and, in the development environment made by scripts/install.sh, from scripts, benchmarks and the
notebook (a .pth file puts tests/ on the path)."""
