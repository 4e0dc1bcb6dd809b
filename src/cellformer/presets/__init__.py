"""Named training configurations (YAML): ``cellformer train ... --config NAME``."""
