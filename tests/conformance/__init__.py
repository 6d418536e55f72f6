"""The local KFP API (mnistflow/local/kfp_api.py) driven by the real kfp.Client, as a workshop
user drives KFP: every call the SDK makes for health, experiments and runs, checked against what
KFP's API server answers (each test names the server code it follows)."""
