"""Correspondences between the frames of a clip, computed at run time by `reconstruct` and
offline by the dataset writer (`data_pipelines`): dense flow from a teacher (`teacher`: OpenCV
DIS on the CPU, or a registered learned model) and point tracks chained through it (`tracks`).

The forward-backward test shared by both (and by the datasets' covisibility masks): a pixel is
consistent when |f + b(x + f)|^2 < FB_ALPHA (|f|^2 + |b(x + f)|^2) + FB_BETA (px^2).
"""

FB_ALPHA = 0.01
FB_BETA = 0.5
