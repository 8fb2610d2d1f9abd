"""Multi-task networks: ResNet encoders, ASPP decoders with configurable rates, receptive fields.

* :mod:`icecontext.models.config` -- ``ModelConfig`` (the ``model:`` section),
  ``resolve_in_channels``, ``load_model_spec``;
* :mod:`icecontext.models.multitask` -- ``build_model(cfg, in_channels)`` and
  ``MultiTaskModel`` (``forward``, ``to_classes``, ``to_probabilities``, ``layer_names``);
* :mod:`icecontext.models.backbones` -- ResNet encoders (timm/torchvision), local
  pretrained weights adapted to any number of input channels;
* :mod:`icecontext.models.aspp` -- ASPP with any rates and a ``global | avg:K | none``
  pooling branch;
* :mod:`icecontext.models.receptive_field` -- theoretical and measured receptive fields;
* :mod:`icecontext.models.trained_context` -- which ASPP taps a training patch trains,
  and the trained receptive field;
* :mod:`icecontext.models.summary` -- parameters and FLOPs per part.

See docs/models.md.
"""
