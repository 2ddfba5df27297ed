"""What each serving profile costs, per environment: `python -m cost` (`make cost`).

`cost.estimate` holds the arithmetic (cheap to import, no AWS, no plotting), `cost.prices` the dated price
table in cost/data/ and the optional live prices, `cost.report` the per-environment options and their
rendering, `cost.chart` the PNG. Nothing here calls AWS unless `--live` is given.
"""
