from __future__ import annotations

import numpy as np

from moodwire.training.metrics import expected_calibration_error, macro_recall, report


def test_macro_recall_and_report_by_hand() -> None:
    y = [0, 0, 1, 1, 1, 2]
    p = [0, 1, 1, 1, 2, 2]
    # recalls: neg 1/2, neu 2/3, pos 1/1
    assert abs(macro_recall(y, p) - (0.5 + 2 / 3 + 1) / 3) < 1e-12
    probs = np.eye(3)[p] * 0.7 + 0.1
    r = report(probs, y)
    assert r.confusion == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert r.accuracy == 4 / 6
    assert r.precision == [1.0, 2 / 3, 0.5]
    assert r.support == [2, 3, 1]


def test_ece_zero_when_calibrated_and_large_when_overconfident() -> None:
    y = np.array([0, 1, 2, 0])
    confident_right = np.eye(3)[y]
    assert expected_calibration_error(confident_right, y) == 0.0
    confident_wrong = np.eye(3)[(y + 1) % 3]
    assert expected_calibration_error(confident_wrong, y) == 1.0
