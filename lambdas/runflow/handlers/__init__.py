"""Lambda entry points: a few lines each over runflow.logic."""
