"""Policies and the policy-evaluation harness."""
