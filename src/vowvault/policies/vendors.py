"""The vendor types with a policy template: constants the command line shows in its help
without importing the policy loader."""

from __future__ import annotations

VENDORS = ("photographer", "venue", "florist", "planner", "platform")
"""The vendor types with a template (values of ``VendorType``, lower-case)."""

DEFAULT_ORG = {"photographer": "my-studio", "venue": "my-venue", "florist": "my-florist",
               "planner": "my-planner", "platform": "my-platform"}
"""The organization slug a template gets when none is given: obviously a placeholder."""
