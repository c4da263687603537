"""Reference solutions to chapter 12's exercises (12_deployment.ipynb). Try the exercises first."""

import numpy as np

CHECKS = "foundation_course.deployment"


def dequantize(q, scale):
    "Float weights from int8 values `q` (rows, cols) and one scale per row, `scale` (rows,)."
    return q.float() * scale[:, None]


def meets_slo(seconds, limit_ms):
    "True when the 95th percentile of the call times (`seconds`) is under `limit_ms` milliseconds."
    return bool(1000 * np.percentile(seconds, 95) < limit_ms)


def _dequantize_dividing(q, scale):
    return q.float() / scale[:, None]


def _dequantize_one_scale(q, scale):
    return q.float() * scale.mean()


def _slo_on_the_mean(seconds, limit_ms):
    return bool(1000 * np.mean(seconds) < limit_ms)


def _slo_in_seconds(seconds, limit_ms):
    return bool(np.percentile(seconds, 95) < limit_ms)


WRONG = {
    "dequantize": [_dequantize_dividing, _dequantize_one_scale],
    "meets_slo": [_slo_on_the_mean, _slo_in_seconds],
}
