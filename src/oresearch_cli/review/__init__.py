"""Human spot-checking of accepted traces: a stratified sample, an interactive terminal review,
review sheets (CSV/JSONL/HTML) for export and import, and the gate that passes or holds a batch."""
