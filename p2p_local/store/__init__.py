"""The user's history at rest: records, the encrypted vault, ingest of history files, and the
sealed export format. Nothing outside this package reads or writes vault files directly."""
