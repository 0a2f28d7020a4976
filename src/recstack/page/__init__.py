"""Page: the ordered list shown to a user, built from ranked candidates by a registered arranger."""

from recstack.page.base import PageArranger, PageInputs, build_page
from recstack.page.fused import PageConfig, arrange_page, fuse_scores

__all__ = ["PageArranger", "PageConfig", "PageInputs", "arrange_page", "build_page", "fuse_scores"]
