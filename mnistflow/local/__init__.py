"""The embedded default: the product on one machine, on an AWS emulator and KFP's local runner."""
