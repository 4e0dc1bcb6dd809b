"""Reading, validating and preparing AnnData into a memory-mapped token store."""
