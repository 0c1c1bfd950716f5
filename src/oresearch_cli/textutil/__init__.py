"""Small text utilities shared by stages: normalization, language tags, near-duplicate detection."""

from oresearch_cli.textutil.dedup import near_duplicates
from oresearch_cli.textutil.lang import detect_language
from oresearch_cli.textutil.normalize import dedup_key, normalize_whitespace

__all__ = ["dedup_key", "detect_language", "near_duplicates", "normalize_whitespace"]
