"""Adapters: one module per outside system, behind the ports in runflow.logic.ports."""
