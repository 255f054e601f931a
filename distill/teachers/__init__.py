"""Teachers: models that label audio with per-head probabilities (and, where they can, features).

Every teacher implements :class:`distill.teachers.base.Teacher`. Neural teachers
(a pretrained speech encoder with trainable context heads) also expose intermediate
features for feature distillation; black-box teachers (a recognizer + the grammar,
an ensemble) give only outputs.
"""
