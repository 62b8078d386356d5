"""Training dainrt's own DAIN models: procedural clips (`synthetic`), the training loop (`train`)
and the Middlebury-layout evaluation (`evaluate`)."""
