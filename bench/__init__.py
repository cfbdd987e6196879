"""modelrepo's benchmark against MLflow's model registry: `make bench` runs it, `python -m bench`."""
