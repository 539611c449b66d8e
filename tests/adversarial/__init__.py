"""Adversarial cases of issue 15: each asserts a clear error or the correct result."""
