"""Export of trained runs for inference outside pionml: ONNX (:mod:`pionml.export.onnx`, the
``pionml export`` command). Nothing is imported here, so the command line stays light."""
