"""Cache implementations (hooks and state); the transforms that install them live in ``transforms``."""
