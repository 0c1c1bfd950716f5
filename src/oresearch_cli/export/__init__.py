"""Writing datasets out of the workspace (Hugging Face compatible Parquet with a dataset card)."""
