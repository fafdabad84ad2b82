"""Training code for the bundled model families.

- :mod:`mlgate.training.ids`: the ``ids`` network-intrusion classifier (CICIDS2017);
- :mod:`mlgate.training.iot`: the IoT anomaly detectors ``iot-isolation-forest``,
  ``iot-lof``, ``iot-autoencoder`` and ``iot`` (the best of them), on SKAB;
- :mod:`mlgate.training.onnx_export`: the ONNX graphs the models are served as, and the
  check that they reproduce the scikit-learn models;
- :mod:`mlgate.training.common`: CSV reading, splits, metrics, version writing.

The command line is ``mlgate train ids|iot`` (:mod:`mlgate.cli.train`).
"""
