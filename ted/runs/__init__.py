"""Runs over a dataset: distillation jobs, evaluations, and the reports they write."""
