"""Studies built from many trainings: learning curves (:mod:`pionml.studies.learning_curve`)."""
