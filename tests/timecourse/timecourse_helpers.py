"""Shared settings for the time-course tests."""

# QC and token settings that suit the tiny synthetic files
SMALL = ["--min-genes", "1", "--min-cells", "0", "--max-mito-fraction", "off", "--max-genes", "32"]
