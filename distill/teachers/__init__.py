"""Teachers: models that label audio with per-head probabilities (and, where they can, features).

Every teacher implements :class:`distill.teachers.base.Teacher`. Neural teachers
(a pretrained speech encoder with trainable context heads) also expose intermediate
features for feature distillation; black-box teachers (a recognizer + the grammar,
an ensemble) give only outputs. The baseline they are compared against is
:mod:`distill.teachers.scratch`, a transformer trained from scratch on log-mel.

Nothing is imported here: :mod:`distill.teachers.scratch` imports :mod:`distill.distillation`, which
imports :mod:`distill.teachers.base`, so eager re-exports would be circular.
"""
