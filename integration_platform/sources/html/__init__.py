"""HTML pages: HtmlSource and its extractor (pages, CSS selectors, next-page links, robots.txt)."""
