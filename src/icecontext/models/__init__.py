"""Multi-task networks: ResNet encoders, ASPP decoders with configurable rates, receptive fields."""
