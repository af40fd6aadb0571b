"""two_step_gd: outliers of the first-layer weights after one and two full-batch GD steps."""
