"""The model zoo: one folder per model (code, `config.yaml`, `smoke.yaml`), found by the registry."""
