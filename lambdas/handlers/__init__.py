"""Lambda entry points: a few lines each over lambdas.composition."""
