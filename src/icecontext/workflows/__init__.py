"""Whole jobs built from the layers below: quickstart, evaluation, reports, baselines."""
