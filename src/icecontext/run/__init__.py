"""What a run is: its configuration schema and the layout of its run folder."""
