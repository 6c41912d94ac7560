"""Engine: avatar preparation, audio features, motion, rig, renderer, offline pipeline."""
