"""AutoML on Optuna: search an archive's training configuration on one machine or many.

The search space is the archive's own Clara-style ``"search"`` blocks (parsed by
:mod:`carina.archive.search`, mapped onto Optuna by :mod:`.space`); :mod:`.study` holds the study,
its storage (a journal file or PostgreSQL) and the workers that run trials with Carina's engine;
:mod:`.run` is ``carina automl`` (local workers, progress) and :mod:`.report` writes the best
archive, the trials' CSV and the plots. Importing this package imports neither Optuna nor torch.
"""
