"""Training, validation, inference and export from model archives, on MONAI's engines.

Modules: :mod:`~carina.engine.train` (``TrainingRun``, ``train_archive``),
:mod:`~carina.engine.evaluate` (``validate_archive``; each model kind plugs in its scorer through
:mod:`carina.kinds`), :mod:`~carina.engine.predict` (``Predictor``), :mod:`~carina.engine.export`
(``export_archive``), :mod:`~carina.engine.distributed` (``torchrun``), and Carina's MONAI
transforms in :mod:`~carina.engine.transforms`. Nothing here imports :mod:`carina.interactive`.
"""
