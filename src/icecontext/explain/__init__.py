"""Grad-CAM explanations for every task head."""
