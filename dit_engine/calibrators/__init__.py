"""Calibrators (``calibrator=``): forecasters bound to an installed cache, so cached steps use a
prediction of the residual instead of the stale one. One module per technique."""
