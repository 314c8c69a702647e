"""One module per dashboard page (and one for the operator actions every page posts to)."""
