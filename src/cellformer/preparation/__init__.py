"""The prepared dataset: writing it (``prepare.py``, ``cellformer.prepare``) and reading it (``prepared.py``).

This stage comes after ``tokenize`` and the time course: preparing a dataset tokenizes its cells, and a
prepared dataset holds its fitted tokenizer.
"""
