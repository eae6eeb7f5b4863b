"""Stage 3, training: the resumable training loop, its run folder, and the images' placement on a device."""
