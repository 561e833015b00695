"""torch.compile as the plan's COMPILE stage (``compile=regional`` / ``compile=full``)."""
