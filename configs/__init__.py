"""Experiment configs: Python files returning an ml_collections ConfigDict from get_config(arg)."""
