"""``python -m analytic_dpm.testing check-variances …`` (see :mod:`analytic_dpm.testing.check_variances`)."""

import sys

from .check_variances import main

sys.exit(main())
