"""Search and crawl backends. Each is a thin async client of one service behind `base`'s protocols."""
