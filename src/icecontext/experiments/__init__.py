"""The spatial-context study: sweeps over atrous rates, features and seeds, and their reports."""
