"""Stage 1, data: the datasets' files and arrays, and the labels (corruption, noise, label files)."""
