"""Pipeline stages. Each module exposes a typed `run_<stage>` function the CLI calls."""
