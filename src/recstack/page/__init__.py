"""Page: the ordered list shown to a user, built from ranked candidates."""

from recstack.page.fused import PageConfig, arrange_page, fuse_scores

__all__ = ["PageConfig", "arrange_page", "fuse_scores"]
