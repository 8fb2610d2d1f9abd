"""The AutoICE challenge metric and its breakdowns."""
