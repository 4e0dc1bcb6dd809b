"""Reading and validating AnnData (QC, labels, splits, vocabulary, alignment) and the memory-mapped token
store; the prepare workflow that ties them to the tokenizers is :mod:`cellformer.preparation`."""
