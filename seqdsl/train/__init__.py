"""Training and generation: data and vocabularies, optimisers, checkpoints, the fit loop, sampling."""
