"""The ground-truth push simulator (numpy + OpenCV + Gymnasium; no torch)."""
