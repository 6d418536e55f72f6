"""Adapters: one module per outside system, behind the ports in lambdas.logic.ports."""
